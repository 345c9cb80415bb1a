"""Publishing the policy of a finished training job (``publish_policy``):
``worker.policy_store.store`` copies the run directory to the next version of the name, and the version
is announced on ``<prefix>.policies``."""

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
    """``result`` with ``policy: {name, version}`` once published and announced, or failed with code
    ``publish_policy`` (the run directory stays as it is)."""
    assert job.publish_policy is not None
    try:
        from worker.policy_store import store as policy_store  # imported here: agent-only installs need none

        published = policy_store.publish_policy(records.root, job.publish_policy, result.output_dir)
    except Exception as err:  # noqa: BLE001 - any failure to publish is reported in the result
        logger.error("job %s: publishing policy %r failed: %s", job.job_id, job.publish_policy, err)
        return replace(result, status=JobStatus.FAILED,
                       error=JobError(JobErrorCode.PUBLISH, f"the training finished but publishing policy "
                                      f"{job.publish_policy!r} failed: {err}"))
    # A fanout without a bound queue (no agent worker running) is fine: agent workers look at start too.
    transport.publish(topology.policies_exchange(prefix), "", policy_store.encode_announcement(published))
    logger.info("job %s published policy %s version %d", job.job_id, published.name, published.version)
    return replace(result, policy={"name": published.name, "version": published.version})
