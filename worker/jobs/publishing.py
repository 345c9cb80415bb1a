"""Publishing the policy of a finished training job (``publish_policy``), through the publishing gate:
``worker.policy_store.gate`` makes the run directory the next version of the name unless the latest version's
recorded best evaluation return beats this run's (``force_publish`` publishes anyway). The result's
``policy`` says which happened.

A new version is announced on ``<prefix>.policies``. With ``canary`` it is released as a canary instead
(``worker.policy_store.releases``: the stable version is pinned first, so no worker serves the new version to
every episode meanwhile) and the release is announced; with ``shadow`` it runs in shadow beside the stable
version in the same way. Where the name has a release state and no canary runs, a plain publication becomes
the stable version.
"""

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
        from worker.policy_store import gate, releases  # imported here: agent-only installs need none
        from worker.policy_store.announcements import encode_announcement, encode_release_announcement

        if job.canary is not None or job.shadow:
            releases.pin_stable(records.root, job.publish_policy)
        outcome = gate.publish_if_not_worse(records.root, job.publish_policy, result.output_dir,
                                            run_return if isinstance(run_return, int | float) else None,
                                            force=job.force_publish)
        release = None
        message = outcome.message
        if outcome.published and job.canary is not None:
            auto = releases.AutoGate(job.canary_min_episodes or releases.DEFAULT_MIN_EPISODES) \
                if job.canary_auto else None
            try:
                release = releases.release_canary(records.root, job.publish_policy, outcome.policy.version,
                                                  job.canary, auto)
                message += f"; released as a canary to {job.canary:g} of new episodes" + \
                    (" (automatic gate)" if auto else "")
            except releases.ReleaseError as err:
                message += f"; not released as a canary, nothing served changes: {err}"
        elif outcome.published and job.shadow:
            try:
                release = releases.start_shadow(records.root, job.publish_policy, outcome.policy.version)
                message += "; runs in shadow beside the stable version"
            except releases.ReleaseError as err:
                message += f"; not run in shadow, nothing served changes: {err}"
        elif outcome.published:
            release = releases.follow_published(records.root, job.publish_policy, outcome.policy.version)
    except Exception as err:  # noqa: BLE001 - any failure to publish is reported in the result
        logger.error("job %s: publishing policy %r failed: %s", job.job_id, job.publish_policy, err)
        return replace(result, status=JobStatus.FAILED,
                       error=JobError(JobErrorCode.PUBLISH, f"the training finished but publishing policy "
                                      f"{job.publish_policy!r} failed: {err}"))
    # A fanout without a bound queue (no agent worker running) is fine: agent workers look at start too.
    if release is not None:
        transport.publish(topology.policies_exchange(prefix), "",
                          encode_release_announcement(release.name, release.generation))
    elif outcome.published and job.canary is None and not job.shadow:
        transport.publish(topology.policies_exchange(prefix), "", encode_announcement(outcome.policy))
    logger.info("job %s, policy %r: %s", job.job_id, outcome.policy.name, message)
    policy = {**outcome.to_plain(), "message": message}
    if job.canary is not None:
        policy["canary"] = None if release is None else release.canary
    if job.shadow:
        policy["shadow"] = None if release is None else release.shadow
    return replace(result, policy=policy)
