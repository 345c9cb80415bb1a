"""Checking a job message before anything runs: decode, reply address, what it asks for (``JobGuard``: the
allow-list of groups and keys, class paths and paths), stored result, cancellation, attempts and the config
itself (composed here, cheaply, so a bad override is answered at once and never retried).

``JobIntake.check`` returns ``Accepted`` (run it, or split it) or ``Rejected`` (answer and/or dead-letter it,
then acknowledge), and never raises, whatever the message holds. It reads the artifact root but not the
broker.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from typing import Any

from worker.broker.job_transport import JobDelivery
from worker.errors import WorkerError, one_line
from worker.jobs import split
from worker.jobs.codec import JobDecodeError, best_effort_job_id, decode_job
from worker.jobs.control import DEFAULT_CANCEL_REASON, cancellation_of
from worker.jobs.guard import JobGuard, JobRefused
from worker.jobs.records import JobRecords
from worker.jobs.schema import JobError, JobErrorCode, JobKind, JobMessage, JobResult, JobStatus
from worker.wire import topology
from worker.wire.topology import JOB_ATTEMPTS_HEADER, DeadReason

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Accepted:
    """Run ``job`` (attempt number ``attempts``), or publish ``split``'s chunk jobs instead."""

    job: JobMessage
    attempts: int
    split: split.ChunkPlan | None = None


@dataclass(frozen=True)
class Rejected:
    """Do not run: answer with ``result`` (when not None; ``store``: keep it as the job's final result) and
    dead-letter the message when ``dead_reason`` is set."""

    result: JobResult | None
    store: bool = False
    dead_reason: str | None = None
    field: str = ""
    detail: str = ""
    job: JobMessage | None = None
    """The decoded job, when it could be decoded (a chunk's parent must learn of its end)."""


class ConfigCheckError(WorkerError):
    """The job's config does not compose; ``field`` is ``config`` or ``overrides``."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


def attempts_of(headers: dict[str, Any]) -> int:
    """Starts recorded in the job's attempts header (0 when absent or unreadable)."""
    value = headers.get(JOB_ATTEMPTS_HEADER, 0)
    return value if type(value) is int and value >= 0 else 0


def check_config(job: JobMessage, guard: JobGuard | None = None) -> Any:
    """Compose the job's config like ``maze-run`` would; returns it (resolved) or raises ConfigCheckError, or
    JobRefused when ``guard`` finds a class path, path or name the composed config may not hold."""
    from omegaconf import OmegaConf

    from maze_engine.config import compose_config

    try:
        compose_config(job.config, [])
    except Exception as err:  # noqa: BLE001 - Hydra raises several types for an unknown config
        raise ConfigCheckError("config", f"config: cannot compose {job.config!r} "
                                         f"({one_line(err)})") from err
    try:
        cfg = compose_config(job.config, list(job.overrides))
    except Exception as err:  # noqa: BLE001 - Hydra and omegaconf raise many types for bad overrides
        raise ConfigCheckError("overrides", f"overrides: {one_line(err)}") from err
    if guard is not None:
        guard.check_composed(cfg)
    try:
        resolved = OmegaConf.to_container(cfg, resolve=True)
    except Exception as err:  # noqa: BLE001 - as above
        raise ConfigCheckError("overrides", f"overrides: {one_line(err)}") from err
    assert isinstance(resolved, dict)
    trains = resolved.get("algorithm") is not None
    if job.kind is JobKind.TRAIN and not trains:
        raise ConfigCheckError("config", f"config: a train job needs a training config (with an algorithm), "
                                         f"got {job.config!r}")
    if job.kind is JobKind.ROLLOUT and trains:
        raise ConfigCheckError("config", f"config: a rollout job needs a rollout config, got the training "
                                         f"config {job.config!r}")
    return resolved


class JobIntake:
    """The checks of the module docstring, against the job records of one artifact root."""

    def __init__(self, records: JobRecords, guard: JobGuard | None = None) -> None:
        self.records = records
        self.guard = guard or JobGuard(records.root)

    def check(self, delivery: JobDelivery, delivery_limit: int, lease_ttl_s: float = math.inf,
              now: float | None = None) -> Accepted | Rejected:
        """What to do with ``delivery``; ``lease_ttl_s`` tells a live lease elsewhere from a lapsed one.

        Never raises: a message that breaks a check in an unforeseen way is rejected as ``bad_job`` (and
        logged), so one message cannot stop the worker.
        """
        try:
            return self._check(delivery, delivery_limit, lease_ttl_s, now)
        except Exception as err:  # noqa: BLE001 - see the docstring
            logger.error("a job message could not be checked (%s); dead-lettering it", type(err).__name__,
                         exc_info=True)
            detail = f"job: the message could not be checked ({type(err).__name__})"
            job_id = _safe_job_id(delivery.body)
            result = (_failed(job_id, "", JobErrorCode.BAD_JOB, detail)
                      if job_id is not None and delivery.reply_to else None)
            return Rejected(result, dead_reason=DeadReason.BAD_JOB, field="job", detail=detail)

    def _check(self, delivery: JobDelivery, delivery_limit: int, lease_ttl_s: float,
               now: float | None) -> Accepted | Rejected:
        try:
            job = decode_job(delivery.body)
        except JobDecodeError as err:
            job_id = err.job_id or best_effort_job_id(delivery.body)
            result = None
            if job_id is not None and delivery.reply_to:
                result = _failed(job_id, "", JobErrorCode.BAD_JOB, err.message)
            return Rejected(result, dead_reason=DeadReason.BAD_JOB, field=err.field, detail=err.message)
        if not delivery.reply_to and job.chunk_of is None:
            return Rejected(None, dead_reason=DeadReason.NO_REPLY_TO, field="reply_to",
                            detail="the job has no reply_to property, so its result cannot be sent")
        try:
            job = self.guard.vet(job)
        except JobRefused as err:
            return self._refused(delivery, job, err)
        stored = self.records.result(job.job_id)
        if stored is not None:
            answered = (self.records.record(job.job_id) or {}).get("answered") is True
            if topology.JOB_ATTEMPTS_HEADER in delivery.headers and answered:
                # A worker's copy (a lapsed lease duplicated by a renewal), not a resubmission, and the
                # result reached the broker: the job's client has its answer already. Without that mark the
                # answer may have been lost with a connection, so the stored result is sent (again).
                return Rejected(None)
            return Rejected(stored)
        record = self.records.record(job.job_id) or {}
        if job.chunks and job.chunk_of is None and record.get("chunks"):
            return Rejected(None)  # split already (the split was redelivered); the chunks answer it
        if _leased_elsewhere(record, lease_ttl_s, time.time() if now is None else now):
            # A second copy of a job another worker runs (made by a renewal or an ack that never reached the
            # broker): that worker's lease holds the job and brings it back should that worker die.
            return Rejected(None)
        mark = cancellation_of(self.records, job)
        if mark is not None:
            reason = str(mark.get("reason") or DEFAULT_CANCEL_REASON)
            result = JobResult(job.job_id, str(job.kind), JobStatus.CANCELLED,
                               str(self.records.output_dir(job.job_id)), error=JobError("cancelled", reason))
            return Rejected(result, store=True, job=job)
        attempts = attempts_of(delivery.headers) + 1
        if attempts > delivery_limit:
            last = record.get("last_error") or {}
            message = (f"failed on all {attempts - 1} attempts (delivery limit {delivery_limit}); last: "
                       f"{last.get('message', 'the worker running it was lost')}")
            return Rejected(_failed(job.job_id, str(job.kind), JobErrorCode.CRASHED, message,
                                    str(self.records.output_dir(job.job_id)), attempts - 1),
                            store=True, dead_reason=DeadReason.JOB_FAILED, field="job", detail=message,
                            job=job)
        try:
            config = {} if job.evaluation is not None else check_config(job, self.guard)  # composes none
        except JobRefused as err:
            return self._refused(delivery, job, err)
        except ConfigCheckError as err:
            return Rejected(_failed(job.job_id, str(job.kind), JobErrorCode.CONFIG, err.message),
                            dead_reason=DeadReason.BAD_JOB, field=err.field, detail=err.message)
        if job.kind is JobKind.ROLLOUT and job.chunks and job.chunks > 1 and job.chunk_of is None:
            runner = config.get("runner") or {}
            episodes = runner.get("n_episodes")
            if type(episodes) is not int or episodes < 1:
                return Rejected(_failed(job.job_id, str(job.kind), JobErrorCode.CONFIG,
                                        f"runner.n_episodes: expected a positive integer to split, "
                                        f"got {episodes!r}"),
                                dead_reason=DeadReason.BAD_JOB, field="overrides", detail="runner.n_episodes")
            seed = config.get("seed")
            plan = split.plan_chunks(job, episodes, seed if type(seed) is int else None)
            return Accepted(job, attempts, plan)
        return Accepted(job, attempts)


    @staticmethod
    def _refused(delivery: JobDelivery, job: JobMessage, err: JobRefused) -> Rejected:
        """A job that asks for what a job may not: answered ``bad_job`` and dead-lettered, never run."""
        result = _failed(job.job_id, str(job.kind), JobErrorCode.BAD_JOB, err.message) if delivery.reply_to \
            else None
        return Rejected(result, dead_reason=DeadReason.BAD_JOB, field=err.field, detail=err.message)


def _safe_job_id(body: Any) -> str | None:
    try:
        return best_effort_job_id(body)
    except Exception:  # noqa: BLE001 - only used while rejecting a message that broke a check
        return None


def _leased_elsewhere(record: dict[str, Any], lease_ttl_s: float, now: float) -> bool:
    """True when the record says a worker renewed its lease on the job within half a lease period.

    Renewals come every third of a period, so a live worker always has; a lapsed lease (the copy that just
    came back to the queue) is a whole period old.
    """
    renewed = record.get("lease_renewed")
    return (record.get("status") == "running" and isinstance(renewed, int | float)
            and now - renewed < lease_ttl_s / 2)


def _failed(job_id: str, kind: str, code: str, message: str, output_dir: str = "",
            attempts: int = 0) -> JobResult:
    return JobResult(job_id, kind, JobStatus.FAILED, output_dir, error=JobError(str(code), message),
                     attempts=attempts)
