"""RolloutEvaluator and BestModelSelection."""

import math

import pytest

from maze_engine import ConfigError, GymMazeEnv, LogStatsWrapper, RandomPolicy, RolloutEvaluator
from maze_engine.core.stats.writers import StatsWriter, stats_writers
from maze_engine.training.evaluator import BestModelSelection


def test_seed_usage_single_env() -> None:
    # As in the seeds: an env with statistics logging, a policy, no model selection.
    env = GymMazeEnv("CartPole-v1")
    evaluator = RolloutEvaluator(eval_env=LogStatsWrapper.wrap(env, logging_prefix="eval"), n_episodes=3,
                                 model_selection=None)
    stats = evaluator.evaluate(RandomPolicy(env.action_spaces_dict, seed=0))
    assert stats["episode_return"]["count"] == 3
    assert stats["episode_return"]["mean"] > 0


@pytest.mark.parametrize("n_envs, n_episodes", [(1, 2), (2, 5), (4, 3)])
def test_episodes_are_spread_over_envs(n_envs: int, n_episodes: int) -> None:
    envs = [GymMazeEnv("CartPole-v1") for _ in range(n_envs)]
    evaluator = RolloutEvaluator(envs, n_episodes=n_episodes, max_episode_steps=8)
    stats = evaluator.evaluate(RandomPolicy(envs[0].action_spaces_dict, seed=1))
    assert stats["episode_length"]["count"] == n_episodes
    assert stats["episode_length"]["max"] <= 8
    # A second evaluation starts from fresh statistics.
    again = evaluator.evaluate(RandomPolicy(envs[0].action_spaces_dict))
    assert again["episode_length"]["count"] == n_episodes


def test_statistics_reach_registered_writers() -> None:
    class Collect(StatsWriter):
        def __init__(self) -> None:
            self.prefixes: list[str] = []

        def write(self, stats, epoch, prefix):
            self.prefixes.append(prefix)

    writer = Collect()
    env = GymMazeEnv("CartPole-v1")
    with stats_writers(writer):
        RolloutEvaluator(env, n_episodes=1).evaluate(RandomPolicy(env.action_spaces_dict))
    assert writer.prefixes == ["eval"]


def test_model_selection_saves_on_new_best() -> None:
    saved: list[float] = []
    selection = BestModelSelection(save=lambda: saved.append(selection.best_score))
    for score in (1.0, 3.0, 2.0, math.nan, 3.0, 4.0):
        selection.update(score)
    assert saved == [1.0, 3.0, 4.0]
    assert selection.best_score == 4.0 and selection.epochs_without_improvement == 0
    selection.update(0.0)
    assert selection.epochs_without_improvement == 1


def test_evaluator_feeds_model_selection() -> None:
    env = GymMazeEnv("CartPole-v1")
    selection = BestModelSelection()
    stats = RolloutEvaluator(env, 2, selection).evaluate(RandomPolicy(env.action_spaces_dict, seed=3))
    assert selection.best_score == stats["episode_return"]["mean"]


@pytest.mark.parametrize("kwargs, field", [({"n_episodes": 0}, "n_episodes"),
                                           ({"n_episodes": 1, "max_episode_steps": 0}, "max_episode_steps")])
def test_bad_arguments_name_the_field(kwargs: dict[str, int], field: str) -> None:
    with pytest.raises(ConfigError, match=field):
        RolloutEvaluator(GymMazeEnv("CartPole-v1"), **kwargs)


def test_eval_env_must_be_an_env() -> None:
    with pytest.raises(ConfigError, match="eval_env"):
        RolloutEvaluator("CartPole-v1", 1)
