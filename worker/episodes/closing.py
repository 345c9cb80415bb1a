"""How episodes leave the table: the reasons, what is remembered of them, and their statistics."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any, NamedTuple

from maze_engine.core.stats.running import RunningStats
from maze_engine.deployment.agent_deployment import AgentDeployment
from maze_engine.wrappers.logging.log_stats import EpisodeStats, LogStatsWrapper
from maze_engine.wrappers.wrapper import find_wrapper


class CloseReason(StrEnum):
    """Why an episode left the table (the ``reason`` label of the episodes-closed metric)."""

    DONE = "done"
    IDLE = "idle"
    ERROR = "error"
    SHUTDOWN = "shutdown"


@dataclass(frozen=True)
class ClosedEpisode:
    """An episode that left the table; ``stats`` are its return and length where a LogStatsWrapper saw it."""

    episode: str
    reason: CloseReason
    last_seq: int
    stats: EpisodeStats | None
    policy_version: int | None = None
    """The published policy version the episode acted with (None: an unpublished policy)."""

    @classmethod
    def of(cls, episode: Any, reason: CloseReason, last_seq: int) -> ClosedEpisode:
        """The record of an OpenEpisode leaving the table: why, its statistics and its policy version."""
        stats = episode_stats(episode.deployment)
        return cls(episode.episode, reason, last_seq, stats, episode.policy_version)


class Remembered(NamedTuple):
    """What the table keeps of a closed episode: why and when it closed, and its final reply."""

    reason: CloseReason
    last_seq: int
    reply: bytes | None


class FinishedEpisodes:
    """Statistics of the episodes closed since the last ``take``: count by reason, returns and lengths."""

    def __init__(self) -> None:
        self.total = 0
        self.by_reason: dict[str, int] = {}
        self.returns = RunningStats()
        self.lengths = RunningStats()

    def add(self, closed: ClosedEpisode) -> None:
        self.total += 1
        self.by_reason[closed.reason.value] = self.by_reason.get(closed.reason.value, 0) + 1
        if closed.stats is not None and closed.stats.episode_length > 0:
            self.returns.add(closed.stats.episode_return)
            self.lengths.add(closed.stats.episode_length)

    def merge(self, other: FinishedEpisodes) -> None:
        """Add ``other``'s episodes to these (a run's totals from its intervals)."""
        self.total += other.total
        for reason, count in other.by_reason.items():
            self.by_reason[reason] = self.by_reason.get(reason, 0) + count
        self.returns.merge(other.returns)
        self.lengths.merge(other.lengths)

    def take(self) -> FinishedEpisodes:
        """The statistics gathered so far; this object starts afresh."""
        taken = FinishedEpisodes()
        taken.total, taken.by_reason, taken.returns, taken.lengths = \
            self.total, self.by_reason, self.returns, self.lengths
        self.__init__()  # type: ignore[misc]
        return taken


def episode_stats(deployment: AgentDeployment) -> EpisodeStats | None:
    """The return and length of the deployment's last episode, where a LogStatsWrapper saw it."""
    wrapper = find_wrapper(deployment.env, LogStatsWrapper)
    return None if wrapper is None else wrapper.last_episode_stats
