"""``dataset=stream:<prefix>`` in a training job: the experience stream of an agent-worker prefix, exported
by the job's child process before it trains.

The guard (``worker.jobs.guard``) lets ``stream:<prefix>`` through when the prefix is a broker prefix. The job
worker hands the child its broker settings (in the environment, never in the job directory), and the child
(``export_stream_dataset``) reads ``<prefix>.experience`` from its first offset to its end (all recorded
episodes of every policy, ``worker.experience.export``) into the Minari dataset
``<job dir>/datasets/experience/stream-v0`` and trains on that path in place of ``stream:<prefix>``. In the
child, a long export leaves the job worker's loop free: it keeps answering the broker's heartbeats, renewing
the job's lease and hearing cancellations, and the job's time limit covers the export too. A stream that is
missing or holds no complete episode fails the job with code ``data`` naming ``dataset`` (not retried). A
retried job exports anew (the stream may have grown).
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import replace
from pathlib import Path
from typing import Any

from worker.broker.stream import StreamNotFound
from worker.errors import ConfigProblem, WorkerError, one_line
from worker.jobs.grammar import OverrideSyntaxError, parse_override
from worker.jobs.rules import DATASET_KEY, STREAM
from worker.settings import BrokerSettings

logger = logging.getLogger(__name__)

EXPORT_DIR = "datasets"
EXPORT_ID = "experience/stream-v0"
IDLE_S = 1.0
"""The stream's end: no record for this long."""


class StreamDatasetError(WorkerError):
    """The stream a job trains on cannot give a dataset; the message starts with ``dataset:``."""


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


def export_stream_dataset(cfg: Any, job_dir: Path, broker: BrokerSettings | None) -> None:
    """Export the stream of the composed training config ``cfg``'s ``dataset=stream:<prefix>`` and point
    ``cfg.dataset`` at the exported dataset (nothing to do for another dataset); StreamDatasetError when the
    stream cannot give one."""
    dataset = cfg.get("dataset")
    if not isinstance(dataset, str) or not dataset.startswith(STREAM):
        return
    prefix = dataset[len(STREAM):]
    if broker is None:
        raise StreamDatasetError(f"dataset: cannot use stream:{prefix}: the job's process was given no "
                                 "broker settings")
    try:
        path = _export(cfg, prefix, job_dir / EXPORT_DIR, broker)
    except (WorkerError, ConfigProblem, StreamNotFound, ValueError, OSError) as err:
        raise StreamDatasetError(f"dataset: cannot use stream:{prefix}: "
                                 f"{getattr(err, 'message', None) or one_line(err)}") from None
    cfg.dataset = str(path)


def _export(cfg: Any, prefix: str, out: Path, broker: BrokerSettings) -> Path:
    """Export ``<prefix>.experience`` into ``out`` for the env and wrappers of the job's config."""
    from omegaconf import OmegaConf

    from worker.experience.cli import _spaces
    from worker.experience.export import export

    resolved: Any = OmegaConf.to_container(cfg, resolve=True)
    spaces, env_spec = _spaces(resolved)
    shutil.rmtree(out, ignore_errors=True)  # an earlier attempt's export
    out.mkdir(parents=True, exist_ok=True)
    summary = export(replace(broker, prefix=prefix), EXPORT_ID, out, spaces, env_spec, "first",
                     idle_s=IDLE_S, progress=False)
    if not summary.episodes:
        raise ConfigProblem(f"{prefix}.experience holds no complete recorded episode (records read: "
                            f"{summary.records}, unfinished runs: {summary.unfinished_runs}); record "
                            f"some with experience.record=true on the agent workers of that prefix")
    logger.info("exported %d episodes (%d steps) of %s.experience to %s", summary.episodes, summary.steps,
                prefix, out / EXPORT_ID)
    return out / EXPORT_ID
