"""``dataset=stream:<prefix>`` in a training job: the experience stream of an agent-worker prefix, exported
by the job worker before the job's child starts.

The guard (``worker.jobs.guard``) lets ``stream:<prefix>`` through when the prefix is a broker prefix. Once
the job is accepted, ``prepare_dataset`` reads ``<prefix>.experience`` from its first offset to its end (all
recorded episodes of every policy, ``worker.experience.export``) into the Minari dataset
``<job dir>/datasets/experience/stream-v0`` and gives the child that path in place of ``stream:<prefix>``. A
stream that is missing or holds no complete episode refuses the job as ``bad_job`` naming ``dataset``.
A retried job exports anew (the stream may have grown).
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import replace
from pathlib import Path

from worker.broker.stream import StreamNotFound
from worker.errors import ConfigProblem, WorkerError, one_line
from worker.jobs.grammar import OverrideSyntaxError, parse_override, render_override
from worker.jobs.intake import Accepted, ConfigCheckError, Rejected, check_config
from worker.jobs.records import JobRecords
from worker.jobs.rules import DATASET_KEY, STREAM
from worker.jobs.schema import JobError, JobErrorCode, JobMessage, JobResult, JobStatus
from worker.settings import BrokerSettings
from worker.wire.topology import DeadReason

logger = logging.getLogger(__name__)

EXPORT_DIR = "datasets"
EXPORT_ID = "experience/stream-v0"
IDLE_S = 1.0
"""The stream's end: no record for this long."""


def stream_override(overrides: tuple[str, ...] | list[str]) -> tuple[int, str] | None:
    """The index and prefix of the ``dataset=stream:<prefix>`` override, if the job has one."""
    for index, text in enumerate(overrides):
        try:
            override = parse_override(text)
        except OverrideSyntaxError:
            continue
        if override.key == DATASET_KEY and isinstance(override.value, str) \
                and override.value.startswith(STREAM):
            return index, override.value[len(STREAM):]
    return None


def prepare_dataset(decision: Accepted, records: JobRecords, broker: BrokerSettings) -> Accepted | Rejected:
    """``decision`` with its job's ``dataset=stream:<prefix>`` exported and replaced by the dataset's path,
    or Rejected (``bad_job``, field ``dataset``) when the stream cannot give one; other jobs unchanged."""
    job = decision.job
    found = stream_override(job.overrides)
    if found is None:
        return decision
    index, prefix = found
    out = records.job_dir(job.job_id) / EXPORT_DIR
    try:
        path = _export(job, prefix, out, broker)
    except (WorkerError, ConfigProblem, ConfigCheckError, StreamNotFound, ValueError, OSError) as err:
        message = f"dataset: cannot use stream:{prefix}: {getattr(err, 'message', None) or one_line(err)}"
        logger.warning("job %s refused: %s", job.job_id, message)
        result = JobResult(job.job_id, str(job.kind), JobStatus.FAILED, "",
                           error=JobError(JobErrorCode.BAD_JOB, message))
        return Rejected(result, dead_reason=DeadReason.BAD_JOB, field=DATASET_KEY, detail=message, job=job)
    overrides = list(job.overrides)
    overrides[index] = render_override(DATASET_KEY, str(path))
    return replace(decision, job=replace(job, overrides=tuple(overrides)))


def _export(job: JobMessage, prefix: str, out: Path, broker: BrokerSettings) -> Path:
    """Export ``<prefix>.experience`` into ``out`` for the env and wrappers of ``job``'s config."""
    from worker.experience.cli import _spaces
    from worker.experience.export import export

    spaces, env_spec = _spaces(check_config(job))
    shutil.rmtree(out, ignore_errors=True)  # an earlier attempt's export
    out.mkdir(parents=True, exist_ok=True)
    summary = export(replace(broker, prefix=prefix), EXPORT_ID, out, spaces, env_spec, "first",
                     idle_s=IDLE_S, progress=False)
    if not summary.episodes:
        raise ConfigProblem(f"{prefix}.experience holds no complete recorded episode (records read: "
                            f"{summary.records}, unfinished runs: {summary.unfinished_runs}); record "
                            f"some with experience.record=true on the agent workers of that prefix")
    logger.info("job %s: exported %d episodes (%d steps) of %s.experience to %s", job.job_id,
                summary.episodes, summary.steps, prefix, out / EXPORT_ID)
    return out / EXPORT_ID
