"""``maze-worker experience export``: the recorded episodes of the stream as a Minari dataset.

Each recorded episode (a run, stitched from its chunks) becomes one Minari episode through Minari's own
storage API (``MinariStorage.new`` and ``update_episodes``, the calls ``minari.create_dataset_from_buffers``
makes): observations are the policy's observation dicts (N + 1 of them, the last one the observation after
the final step), actions are the *applied* actions (the producer's, or the worker's proposal where none was
reported), with rewards, terminations and truncations; ``infos`` carry the worker's proposals, their
log-probabilities and whether an applied action was reported; each episode's metadata (key ``maze``, JSON)
names its episode id, run, policy name and version, and serving mode. The observation and action spaces
are the policy's, from the env config. The dataset lands in ``<out>/<dataset_id>/data``, so
``MINARI_DATASETS_PATH=<out>`` makes ``minari.load_dataset(dataset_id)`` find it. A child process writes
it (``worker/experience/writer.py``) while this one reads the stream; a failed export leaves no dataset.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from maze_engine.records.minari import head
from worker.episodes.spaces import ServedSpaces
from worker.errors import WorkerError
from worker.experience.reader import ReadStats, RecordedEpisode, Stitcher, read_episodes
from worker.experience.record import concatenate, stack
from worker.experience.writer import DatasetWriteError, DatasetWriter
from worker.settings import BrokerSettings
from worker.wire import topology

WRITE_BATCH = 256
"""Episodes sent to the writer process at a time (it opens the HDF5 file once for each batch)."""


class ExportError(WorkerError):
    """The export cannot be done; the message names the option or the data at fault."""


@dataclass
class ExportSummary:
    """What an export read and wrote."""

    path: Path
    episodes: int = 0
    steps: int = 0
    seconds: float = 0.0
    records: int = 0
    unfinished_runs: int = 0
    skipped: int = 0
    """Episodes too short to write (no observation after their last step and a single step)."""
    policies: list[str] = field(default_factory=list)


def dataset_path(out: Path, dataset_id: str) -> Path:
    """Where ``dataset_id`` is written under ``out``; ExportError for an id Minari does not accept."""
    from minari.dataset.minari_dataset import parse_dataset_id

    try:
        parse_dataset_id(dataset_id)  # an id without -v<version> fails in int(None)
    except (ValueError, TypeError) as err:
        raise ExportError(f"--dataset-id: expected (namespace/)name-v<version> such as cartpole/line7-v0, "
                          f"got {dataset_id!r} ({err})") from None
    path = out / dataset_id / "data"
    if path.exists():
        raise ExportError(f"--dataset-id: {dataset_id} already exists in {out}; choose another id or version")
    return path


def export(broker: BrokerSettings, dataset_id: str, out: Path, spaces: ServedSpaces, env_spec: Any = None,
           start: str = "first", episodes: int | None = None, policy: str | None = None,
           idle_s: float = 1.0, progress: bool = True) -> ExportSummary:
    """Read ``<prefix>.experience`` from ``start`` and write up to ``episodes`` episodes (of ``policy``)."""
    from minari import __version__ as minari_version
    from tqdm import tqdm

    path = dataset_path(out, dataset_id)
    step = spaces.default_step
    observation_space = spaces.observations[step]
    stats, stitcher = ReadStats(), Stitcher()
    summary = ExportSummary(path)
    stream = topology.experience_stream(broker.prefix)
    buffers: list[Any] = []
    metadata: list[dict[str, Any]] = []
    started = time.perf_counter()
    # Forked first, before the stream's connection and the progress bar's thread exist.
    writer = DatasetWriter(path, observation_space, spaces.policy_actions[step], env_spec)
    finished = False
    try:
        with tqdm(total=episodes, unit="episode", disable=not progress,
                  desc=f"exporting {dataset_id}") as bar:
            for recorded in _limited(read_episodes(broker, start, idle_s, policy, stats, stitcher), episodes):
                buffer = to_buffer(recorded, observation_space)
                if buffer is None:
                    summary.skipped += 1
                    continue
                buffers.append(buffer)
                metadata.append(episode_metadata(recorded))
                summary.episodes += 1
                summary.steps += len(buffer.rewards)
                bar.update(1)
                bar.set_postfix(steps=summary.steps, refresh=False)
                if len(buffers) >= WRITE_BATCH:
                    writer.write(buffers, metadata)
                    buffers, metadata = [], []
        if buffers:
            writer.write(buffers, metadata)
        summary.records, summary.unfinished_runs = stats.records, stitcher.unfinished
        summary.policies = sorted(stats.policies)
        if summary.episodes:
            writer.finish({
                "dataset_id": dataset_id, "minari_version": minari_version,
                "algorithm_name": f"maze-worker experience export of {policy or ', '.join(summary.policies)}",
                "description": f"Episodes served by maze-worker and recorded to {stream}; actions are the "
                               f"applied actions, infos hold the worker's proposals and their "
                               f"log-probabilities."})
            finished = True
    except DatasetWriteError as err:
        raise ExportError(str(err)) from err
    finally:
        if not finished:
            writer.abort()
    if not summary.episodes:
        if stats.records == 0:
            raise ExportError(f"{stream}: the experience stream is empty from --from {start}; nothing to "
                              f"export")
        if policy is not None and policy not in stats.policies:
            raise ExportError(f"--policy: no record of policy {policy!r} in {stream}; it holds records of "
                              f"{', '.join(summary.policies) or 'no policy'}")
        raise ExportError(f"{stream}: {stats.records} records but no complete episode ({stitcher.unfinished} "
                          f"runs unfinished, {summary.skipped} too short); nothing to export")
    summary.seconds = time.perf_counter() - started
    return summary


def episode_metadata(recorded: RecordedEpisode) -> dict[str, Any]:
    """Where a Minari episode came from: one metadata key, ``maze``, holding JSON (each HDF5 attribute costs
    Minari's storage about as much as 40 steps of data, so one instead of five)."""
    return {"maze": json.dumps({"episode": recorded.episode, "run": recorded.run,
                                "policy": recorded.policy_name, "policy_version": recorded.policy_version,
                                "mode": recorded.mode})}


def _limited(episodes: Iterator[RecordedEpisode], count: int | None) -> Iterator[RecordedEpisode]:
    """The first ``count`` episodes (all with None), without waiting for one more."""
    if count is None:
        yield from episodes
        return
    for number, episode in enumerate(episodes, start=1):
        yield episode
        if number >= count:
            return


def to_buffer(recorded: RecordedEpisode, observation_space: Any) -> Any:
    """One recorded episode as a Minari EpisodeBuffer (None when too short to be one)."""
    from minari.data_collector import EpisodeBuffer

    columns = recorded.columns
    if columns is None:
        return None
    _check_keys(recorded, columns["observation"], observation_space)
    count = recorded.steps
    observations = columns["observation"]
    final = recorded.final_observation
    if final is not None:
        observations = concatenate([observations, stack([final])])
    elif count < 2:
        return None
    else:  # no observation after the last step: that step's observation ends the episode instead
        count -= 1
    rewards = np.nan_to_num(columns["reward"][:count], nan=0.0)
    terminations = columns["terminated"][:count].copy()
    truncations = columns["truncated"][:count].copy()
    if recorded.end not in ("done", "truncated"):  # closed without done: cut off, not terminated
        truncations[-1] = True
    infos = {"proposed_action": _padded(head(columns["action"], count)),
             "log_prob": _padded(columns["log_prob"][:count], math.nan),
             "applied_reported": _padded(columns["applied_reported"][:count], False)}
    return EpisodeBuffer(observations=observations, actions=head(columns["applied_action"], count),
                         rewards=rewards, terminations=terminations, truncations=truncations, infos=infos)


def _check_keys(recorded: RecordedEpisode, observations: Any, space: Any) -> None:
    expected = list(getattr(space, "spaces", {}))
    got = list(observations) if isinstance(observations, dict) else []
    if sorted(expected) != sorted(got):
        raise ExportError(f"episode {recorded.episode} (policy {recorded.policy_name!r}): its observations "
                          f"have the keys {got}, the env config's observation space {expected}; pass the env "
                          f"and wrappers overrides the workers serve with")


def _padded(column: Any, value: Any = None) -> Any:
    """One more entry (Minari's infos go with the N + 1 observations): ``value``, else the last one again."""
    if isinstance(column, dict):
        return {key: _padded(item, value) for key, item in column.items()}
    if isinstance(column, tuple):
        return tuple(_padded(item, value) for item in column)
    extra = column[-1:] if value is None else np.asarray([value], dtype=column.dtype)
    return np.concatenate([column, extra])
