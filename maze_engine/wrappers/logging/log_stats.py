"""LogStatsWrapper: step, episode and epoch statistics of reward and episode length."""

from dataclasses import dataclass
from typing import Any

from maze_engine.core.env.structured_env import EnvStep, StructuredEnv
from maze_engine.core.stats.running import RunningStats
from maze_engine.core.stats.writers import write_stats
from maze_engine.wrappers.wrapper import Wrapper

# Metric names are fixed and documented in docs/statistics.md.
STEP_REWARD = "step_reward"
EPISODE_RETURN = "episode_return"
EPISODE_LENGTH = "episode_length"


@dataclass(frozen=True)
class EpisodeStats:
    """Return and length of one finished episode; ``truncated`` when a time limit ended it."""

    episode_return: float
    episode_length: int
    truncated: bool = False


class LogStatsWrapper(Wrapper[StructuredEnv]):
    """Records statistics; ``write_epoch_stats`` publishes them to the registered writers and starts a new
    epoch.

    >>> from maze_engine import GymMazeEnv
    >>> env = LogStatsWrapper.wrap(GymMazeEnv("CartPole-v1"), logging_prefix="eval")
    >>> _ = env.reset()
    >>> _ = env.step({"action": 0})
    >>> env.get_stats_value("step_reward", "count")
    1
    """

    def __init__(self, env: StructuredEnv, logging_prefix: str | None = None) -> None:
        super().__init__(env)
        self.logging_prefix = logging_prefix
        self.epoch = 0
        self.last_episode_stats: EpisodeStats | None = None
        self._return = 0.0
        self._length = 0
        self._step_rewards = RunningStats()
        self._returns = RunningStats()
        self._lengths = RunningStats()

    def step(self, action: dict[str, Any]) -> EnvStep:
        step = self.env.step(action)
        _, reward, done, info = step
        reward_value = float(reward)
        self._return += reward_value
        self._length += 1
        self._step_rewards.add(reward_value)
        if done:
            self._finish_episode(bool(info.get("truncated", False)))
        return step  # passed on as it is: a new tuple of the same four values would only cost time

    def reset(self) -> dict[str, Any]:
        # An episode cut short without ``done`` (e.g. a rollout's step limit) still counts.
        if self._length:
            self._finish_episode(truncated=True)
        return self.env.reset()

    def _finish_episode(self, truncated: bool) -> None:
        self.last_episode_stats = EpisodeStats(self._return, self._length, truncated)
        self._returns.add(self._return)
        self._lengths.add(self._length)
        self._return = 0.0
        self._length = 0

    def get_stats(self) -> dict[str, dict[str, float]]:
        """Statistics of the current epoch: ``{metric: {mean, std, min, max, count}}``."""
        return {STEP_REWARD: self._step_rewards.summary(),
                EPISODE_RETURN: self._returns.summary(),
                EPISODE_LENGTH: self._lengths.summary()}

    def get_stats_value(self, metric: str, stat: str) -> float:
        """One statistic of the current epoch, e.g. ``get_stats_value("episode_return", "mean")``."""
        return self.get_stats()[metric][stat]

    def epoch_aggregates(self) -> dict[str, RunningStats]:
        """The raw aggregates of this epoch, mergeable across envs and processes."""
        return {STEP_REWARD: self._step_rewards, EPISODE_RETURN: self._returns, EPISODE_LENGTH: self._lengths}

    def merge_epoch_aggregates(self, aggregates: dict[str, RunningStats]) -> None:
        """Fold aggregates from another env (a worker process) into this epoch."""
        for name, own in self.epoch_aggregates().items():
            if name in aggregates:
                own.merge(aggregates[name])

    def clear_epoch_stats(self) -> None:
        """Start a new epoch without publishing."""
        self._step_rewards = RunningStats()
        self._returns = RunningStats()
        self._lengths = RunningStats()

    def write_epoch_stats(self) -> dict[str, dict[str, float]]:
        """Publish this epoch's statistics to the registered writers, start the next epoch, return what was
        written."""
        stats = self.get_stats()
        write_stats(stats, self.epoch, self.logging_prefix or "stats")
        self.epoch += 1
        self.clear_epoch_stats()
        return stats
