"""LogStatsWrapper: step and episode statistics, cut-short episodes, epochs and their writers."""

import numpy as np
import pytest

from maze_engine import (
    EpisodeStats,
    LogStatsWrapper,
    StatsWriter,
    TimeLimitWrapper,
    instantiate,
    stats_writers,
)
from maze_engine.core.stats.running import RunningStats


class RecordingWriter(StatsWriter):
    def __init__(self) -> None:
        self.calls: list[tuple[dict, int, str]] = []

    def write(self, stats, epoch, prefix):
        self.calls.append((stats, epoch, prefix))


def _episode(env, actions):
    env.reset()
    result = None
    for action in actions:
        result = env.step({"action": action})
    return result


def test_step_and_episode_statistics(counter_env):
    env = LogStatsWrapper.wrap(counter_env(terminate_at=3))
    _episode(env, [2, 1, 0])   # return 3
    _episode(env, [2, 2, 2])   # return 6
    stats = env.get_stats()
    assert stats["step_reward"] == {"mean": 1.5, "std": pytest.approx(np.std([2, 1, 0, 2, 2, 2])),
                                    "min": 0.0, "max": 2.0, "count": 6}
    assert stats["episode_return"] == {"mean": 4.5, "std": 1.5, "min": 3.0, "max": 6.0, "count": 2}
    assert stats["episode_length"] == {"mean": 3.0, "std": 0.0, "min": 3, "max": 3, "count": 2}
    assert env.get_stats_value("episode_return", "max") == 6.0
    assert env.last_episode_stats == EpisodeStats(episode_return=6.0, episode_length=3, truncated=False)


def test_reset_before_done_counts_a_truncated_episode(counter_env):
    env = LogStatsWrapper.wrap(counter_env())
    _episode(env, [1, 1])
    env.reset()
    env.reset()  # no steps since the last reset: nothing to count
    assert env.get_stats_value("episode_length", "count") == 1
    assert env.last_episode_stats == EpisodeStats(2.0, 2, truncated=True)


def test_time_limit_marks_truncation(counter_env):
    env = LogStatsWrapper.wrap(TimeLimitWrapper.wrap(counter_env(), max_episode_steps=4))
    _, _, done, _ = _episode(env, [1, 1, 1, 1])
    assert done and env.last_episode_stats == EpisodeStats(4.0, 4, truncated=True)


def test_write_epoch_stats_publishes_and_starts_a_new_epoch(counter_env):
    env = LogStatsWrapper.wrap(counter_env(terminate_at=2), logging_prefix="eval")
    writer = RecordingWriter()
    with stats_writers(writer):
        _episode(env, [1, 1])
        written = env.write_epoch_stats()
        env.reset()
        env.step({"action": 2})   # an episode spanning the epoch boundary ...
        env.write_epoch_stats()
        env.step({"action": 2})   # ... ends in the next epoch with its full return
        env.write_epoch_stats()
    assert [(epoch, prefix) for _, epoch, prefix in writer.calls] == [(0, "eval"), (1, "eval"), (2, "eval")]
    assert written == writer.calls[0][0]
    assert writer.calls[0][0]["episode_return"]["mean"] == 2.0
    assert writer.calls[1][0]["episode_return"]["count"] == 0
    assert writer.calls[1][0]["step_reward"]["count"] == 1
    assert writer.calls[2][0]["episode_return"] == {"mean": 4.0, "std": 0.0, "min": 4.0, "max": 4.0,
                                                    "count": 1}
    assert env.epoch == 3 and env.get_stats_value("step_reward", "count") == 0


def test_default_prefix(counter_env):
    env = LogStatsWrapper.wrap(counter_env())
    writer = RecordingWriter()
    with stats_writers(writer):
        env.write_epoch_stats()
    assert writer.calls[0][2] == "stats"


def test_merge_epoch_aggregates_from_other_envs(counter_env):
    envs = [LogStatsWrapper.wrap(counter_env(terminate_at=1)) for _ in range(3)]
    for action, env in enumerate(envs):
        _episode(env, [action])
    main = envs[0]
    for other in envs[1:]:
        main.merge_epoch_aggregates(other.epoch_aggregates())
    assert main.get_stats()["episode_return"] == {"mean": 1.0, "std": pytest.approx(0.8164966), "min": 0.0,
                                                  "max": 2.0, "count": 3}
    main.merge_epoch_aggregates({"unknown_metric": RunningStats()})  # ignored
    main.clear_epoch_stats()
    assert main.get_stats_value("episode_return", "count") == 0


def test_instantiate_from_config(counter_env):
    config = {"_target_": "maze_engine.LogStatsWrapper", "logging_prefix": "train"}
    env = instantiate(config, env=counter_env())
    assert isinstance(env, LogStatsWrapper) and env.logging_prefix == "train"
