"""Publishing the policy of a finished training job (``publish_policy``), through the publishing gate:
``worker.policy_store.gate`` makes the run directory the next version of the name unless the latest version's
recorded best evaluation return beats this run's (``force_publish`` publishes anyway); a new version is
announced on ``<prefix>.policies``. The result's ``policy`` says which happened."""

from __future__ import annotations

import logging
from dataclasses import replace

from worker.broker.job_transport import JobTransport
from worker.jobs.records import JobRecords
from worker.jobs.schema import JobError, JobErrorCode, JobMessage, JobResult, JobStatus
from worker.wire import topology

logger = logging.getLogger(__name__)


def publish_trained_policy(job: JobMessage, result: JobResult, records: JobRecords, transport: JobTransport,
                           prefix: str) -> JobResult:
    """``result`` with ``policy: {name, version, published, best_eval_return, message}`` (the new version,
    announced, or the kept one), or failed with code ``publish_policy`` (the run directory stays as it is)."""
    assert job.publish_policy is not None
    run_return = result.summary.get("best_eval_return")
    try:
        from worker.policy_store import gate  # imported here: agent-only installs need none
        from worker.policy_store.announcements import encode_announcement

        outcome = gate.publish_if_not_worse(records.root, job.publish_policy, result.output_dir,
                                            run_return if isinstance(run_return, int | float) else None,
                                            force=job.force_publish)
    except Exception as err:  # noqa: BLE001 - any failure to publish is reported in the result
        logger.error("job %s: publishing policy %r failed: %s", job.job_id, job.publish_policy, err)
        return replace(result, status=JobStatus.FAILED,
                       error=JobError(JobErrorCode.PUBLISH, f"the training finished but publishing policy "
                                      f"{job.publish_policy!r} failed: {err}"))
    if outcome.published:
        # A fanout without a bound queue (no agent worker running) is fine: agent workers look at start too.
        transport.publish(topology.policies_exchange(prefix), "", encode_announcement(outcome.policy))
    logger.info("job %s, policy %r: %s", job.job_id, outcome.policy.name, outcome.message)
    return replace(result, policy=outcome.to_plain())
