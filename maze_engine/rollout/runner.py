"""RolloutRunner: the base of the sequential and parallel runners.

A runner takes an env, a wrapper stack and a policy (configs, factories or instances), adds the wrappers a
rollout needs, runs ``n_episodes`` episodes and returns their statistics, which it also prints as a table and
writes to ``<output_dir>/stats.tsv``. The stack it builds, innermost first::

    env -> configured wrappers -> TimeLimitWrapper (max_episode_steps) -> LogStatsWrapper("rollout")
        -> EventLogWrapper (record_event_logs) -> TrajectoryRecordingWrapper (record_trajectory)
        -> MinariRecordingWrapper (record_minari)

so statistics see every step, cut episodes count as truncated, and trajectories and Minari datasets hold
exactly what the policy saw and did. Minari datasets also hold, in ``infos["log_prob"]``, the policy's
log-probability of each sampled action (its propensity, for off-policy evaluation); deterministic rollouts
have none (NaN), and the dataset's description says so. Each process writes its episodes into a Minari
dataset of its own (a part, under ``.minari_parts``); ``run_with`` joins the parts into
``<output_dir>/minari/<id>/data`` at the end.
"""

import shutil
from abc import ABC, abstractmethod
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from maze_engine.core.env.structured_env import StructuredEnv
from maze_engine.core.errors import ConfigError
from maze_engine.core.stats.running import RunningStats
from maze_engine.core.stats.writers import (
    ConsoleStatsWriter,
    StatsWriter,
    TSVStatsWriter,
    stats_writers,
    write_stats,
)
from maze_engine.rollout.components import apply_wrappers
from maze_engine.wrappers.logging.log_stats import LogStatsWrapper
from maze_engine.wrappers.time_limit import TimeLimitWrapper

Statistics = dict[str, dict[str, float]]
"""``{metric: {mean, std, min, max, count}}`` as returned by every runner."""

Aggregates = dict[str, RunningStats]
"""Raw, mergeable statistics: ``{metric: RunningStats}`` (see LogStatsWrapper.epoch_aggregates)."""

STATS_PREFIX = "rollout"
STATS_FILE = "stats.tsv"
TRAJECTORY_DIR = "trajectory_data"
EVENT_LOG_DIR = "event_logs"
MINARI_DIR = "minari"
"""``record_minari`` datasets go to ``<output_dir>/minari/<id>/data``, so
``MINARI_DATASETS_PATH=<output_dir>/minari`` lets ``minari.load_dataset(id)`` find them."""
MINARI_PARTS_DIR = ".minari_parts"


def _positive_int(field: str, value: Any, allow_none: bool = False) -> int | None:
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
        expected = "a positive integer or null" if allow_none else "a positive integer"
        raise ConfigError(f"runner.{field}: expected {expected}, got {value!r}")
    return int(value)


def _seed(value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 0:
        raise ConfigError(f"seed: expected a non-negative integer or null, got {value!r}")
    return int(value)


def derive_seeds(seed: int | None, count: int) -> list[int]:
    """``count`` independent seeds from ``seed`` (fresh entropy when None), the same for the same ``seed``."""
    return [int(child.generate_state(1)[0]) for child in np.random.SeedSequence(seed).spawn(count)]


def merge_aggregates(parts: list[Aggregates]) -> Aggregates:
    """Fold several processes' aggregates into one, exactly, in the given order."""
    merged: Aggregates = {}
    for part in parts:
        for name, stats in part.items():
            merged.setdefault(name, RunningStats()).merge(stats)
    return merged


def summarize(aggregates: Mapping[str, RunningStats]) -> Statistics:
    """Mean, std, min, max and count per metric."""
    return {name: stats.summary() for name, stats in aggregates.items()}


class RolloutRunner(ABC):
    """Runs a policy in an env for a number of episodes and reports episode statistics.

    Args:
        n_episodes: total number of episodes.
        max_episode_steps: cut episodes after this many steps (counted as truncated); None: no limit.
        deterministic: ask the policy for its most likely action instead of sampling.
        record_trajectory: write episodes under ``<output_dir>/trajectory_data`` (read back with
            ``read_trajectories``).
        record_event_logs: write step events under ``<output_dir>/event_logs``.
        record_minari: a Minari dataset id (``(namespace/)name-v<version>``): write the episodes into that
            dataset under ``<output_dir>/minari`` (what the policy saw, its actions and their
            log-probabilities, rewards, terminations and truncations). None: no dataset.
        seed: seeds env and policy; the same seed gives the same statistics. None: not seeded.
        silent: no console table or progress bar (``stats.tsv`` is still written).
    """

    def __init__(self, n_episodes: int = 10, max_episode_steps: int | None = None,
                 deterministic: bool = False, record_trajectory: bool = False,
                 record_event_logs: bool = False, seed: int | None = None, silent: bool = False,
                 record_minari: str | None = None) -> None:
        self.n_episodes: int = _positive_int("n_episodes", n_episodes)  # type: ignore[assignment]
        self.max_episode_steps = _positive_int("max_episode_steps", max_episode_steps, allow_none=True)
        self.deterministic = bool(deterministic)
        self.record_trajectory = bool(record_trajectory)
        self.record_event_logs = bool(record_event_logs)
        self.seed = _seed(seed)
        self.silent = bool(silent)
        self.record_minari = None
        if record_minari is not None:
            from maze_engine.records.minari import check_dataset_id

            self.record_minari = check_dataset_id(record_minari, "runner.record_minari")

    def run_with(self, env: Any, wrappers: Any, agent: Any, output_dir: str | Path = ".") -> Statistics:
        """Roll ``agent`` out in ``env`` wrapped in ``wrappers``; print, write and return the statistics.

        ``env``, ``wrappers`` and ``agent`` may each be configs or instances (see ``rollout.components``).
        Trajectories, event logs and ``stats.tsv`` go under ``output_dir``.
        """
        directory = Path(output_dir)
        directory.mkdir(parents=True, exist_ok=True)
        dataset = self._minari_dataset(directory)
        parts = directory / MINARI_PARTS_DIR
        try:
            stats = summarize(self._collect(env, wrappers, agent, directory))
            if dataset is not None:
                from maze_engine.records.minari import merge_datasets

                merge_datasets(sorted(parts.iterdir()), dataset, self.record_minari or "",
                               self.minari_metadata())
        finally:
            shutil.rmtree(parts, ignore_errors=True)
        self._publish(stats, directory)
        if dataset is not None and not self.silent:
            root = directory / MINARI_DIR
            print(f"Minari dataset {self.record_minari} written to {dataset.parent} (minari.load_dataset "
                  f"finds it with MINARI_DATASETS_PATH={root})")
        return stats

    def _minari_dataset(self, output_dir: Path) -> Path | None:
        """The ``data`` directory ``record_minari`` writes, checked to be free before anything runs."""
        if self.record_minari is None:
            return None
        path = output_dir / MINARI_DIR / self.record_minari / "data"
        if path.exists():
            raise ConfigError(f"runner.record_minari: a Minari dataset {self.record_minari} already exists "
                              f"in {output_dir / MINARI_DIR}; choose another id or version, or another "
                              "output directory")
        shutil.rmtree(output_dir / MINARI_PARTS_DIR, ignore_errors=True)  # left by a run that was killed
        return path

    def minari_metadata(self) -> dict[str, str]:
        """The ``record_minari`` dataset's metadata: whether its ``infos["log_prob"]`` are propensities."""
        if self.deterministic:
            log_probs = ("the policy acted deterministically (its most likely action), so the episodes carry "
                         "no propensities: infos['log_prob'] is NaN and off-policy evaluation refuses them")
        else:
            log_probs = ("infos['log_prob'] holds the log-probability the policy gave each action it sampled "
                         "(NaN where the policy cannot say): the propensities off-policy evaluation needs")
        return {"algorithm_name": "maze-run rollout",
                "description": f"Episodes of a maze-run rollout: the policy's observations and actions; "
                               f"{log_probs}."}

    def run(self, env: Any, policy: Any, wrappers: Any = None, output_dir: str | Path = ".") -> Statistics:
        """Plain-Python entry point: like ``run_with`` with the policy second and wrappers optional.

        >>> from maze_engine import GymMazeEnv, RandomPolicy, SequentialRolloutRunner
        >>> runner = SequentialRolloutRunner(n_episodes=2, max_episode_steps=5, silent=True)
        >>> import tempfile
        >>> stats = runner.run(GymMazeEnv("CartPole-v1"), {"_target_": "maze_engine.RandomPolicy"},
        ...                    output_dir=tempfile.mkdtemp())
        >>> stats["episode_length"]["count"]
        2
        """
        return self.run_with(env=env, wrappers=wrappers, agent=policy, output_dir=output_dir)

    @abstractmethod
    def _collect(self, env: Any, wrappers: Any, agent: Any, output_dir: Path) -> Aggregates:
        """Run all episodes and return their merged aggregates."""

    def wrap_for_rollout(self, env: StructuredEnv, wrappers: Any, output_dir: Path,
                         part: int = 0) -> tuple[StructuredEnv, LogStatsWrapper]:
        """Apply the configured ``wrappers``, then the rollout's own; returns the stack and its stats.

        ``part`` numbers this process's share of a Minari dataset (the parallel runner's worker index)."""
        env = apply_wrappers(env, wrappers)
        if self.max_episode_steps is not None:
            env = TimeLimitWrapper.wrap(env, max_episode_steps=self.max_episode_steps)
        log_stats = LogStatsWrapper.wrap(env, logging_prefix=STATS_PREFIX)
        env = log_stats
        if self.record_event_logs:
            from maze_engine.wrappers.logging.event_log import EventLogWrapper

            env = EventLogWrapper.wrap(env, output_dir=str(output_dir / EVENT_LOG_DIR))
        if self.record_trajectory:
            from maze_engine.wrappers.recording.trajectory import TrajectoryRecordingWrapper

            env = TrajectoryRecordingWrapper.wrap(env, output_dir=str(output_dir / TRAJECTORY_DIR))
        if self.record_minari is not None:
            from maze_engine.wrappers.recording.minari import MinariRecordingWrapper

            env = MinariRecordingWrapper.wrap(env, path=output_dir / MINARI_PARTS_DIR / f"{part:03d}",
                                              dataset_id=self.record_minari, metadata=self.minari_metadata())
        return env, log_stats

    @staticmethod
    def release_recorders(env: StructuredEnv) -> None:
        """Close the event-log files and Minari datasets of ``env``'s stack without closing the env (one the
        caller owns)."""
        from maze_engine.wrappers.logging.event_log import EventLogWrapper
        from maze_engine.wrappers.recording.minari import MinariRecordingWrapper
        from maze_engine.wrappers.wrapper import Wrapper

        if isinstance(env, Wrapper):
            for wrapper in env.wrapper_stack():
                if isinstance(wrapper, EventLogWrapper):
                    wrapper.writer.close()
                elif isinstance(wrapper, MinariRecordingWrapper):
                    wrapper.finish()

    def _publish(self, stats: Statistics, output_dir: Path) -> None:
        """Print the table, append to ``stats.tsv``; writers live for this call only, so reruns never echo."""
        writers: list[StatsWriter] = [TSVStatsWriter(output_dir / STATS_FILE)]
        if not self.silent:
            writers.append(ConsoleStatsWriter())
        with stats_writers(*writers):
            write_stats(stats, 0, STATS_PREFIX)

