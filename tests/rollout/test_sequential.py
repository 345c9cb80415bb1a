"""SequentialRolloutRunner: episode counts, step limits, statistics output, seeding, input formats."""

from pathlib import Path
from typing import Any

import pytest
from omegaconf import OmegaConf
from rollout_helpers import make_endless_env

from maze_engine import (
    ConfigError,
    GymMazeEnv,
    RandomPolicy,
    SequentialRolloutRunner,
    TimeLimitWrapper,
)
from maze_engine.core.stats.writers import read_stats_tsv, registered_stats_writers
from maze_engine.rollout.sequential import run_episode

CARTPOLE = {"_target_": "maze_engine.make_gym_maze_env", "name": "CartPole-v1"}
RANDOM = {"_target_": "maze_engine.RandomPolicy"}
ENDLESS = {"_target_": "rollout_helpers.make_endless_env"}


def runner(**kwargs: Any) -> SequentialRolloutRunner:
    return SequentialRolloutRunner(**{"silent": True, **kwargs})


@pytest.mark.parametrize("n_episodes", [1, 4])
def test_runs_the_requested_number_of_episodes(tmp_path: Path, n_episodes: int) -> None:
    stats = runner(n_episodes=n_episodes, seed=0).run(CARTPOLE, RANDOM, output_dir=tmp_path)
    assert stats["episode_length"]["count"] == n_episodes
    assert stats["episode_return"]["count"] == n_episodes
    # CartPole pays 1 per step: the step count equals the summed episode lengths.
    total_steps = stats["episode_length"]["mean"] * n_episodes
    assert stats["step_reward"]["count"] == pytest.approx(total_steps)


@pytest.mark.parametrize("max_steps", [1, 7])
def test_max_episode_steps_cuts_endless_episodes(tmp_path: Path, max_steps: int) -> None:
    limited = runner(n_episodes=3, max_episode_steps=max_steps, seed=1)
    stats = limited.run(ENDLESS, RANDOM, output_dir=tmp_path)
    assert stats["episode_length"] == {"mean": max_steps, "std": 0.0, "min": max_steps, "max": max_steps,
                                       "count": 3}
    assert stats["step_reward"]["count"] == 3 * max_steps


def test_cut_episodes_count_as_truncated(tmp_path: Path) -> None:
    env = make_endless_env()
    stack, log_stats = runner(max_episode_steps=4).wrap_for_rollout(env, None, tmp_path)
    run_episode(stack, RandomPolicy(stack.action_spaces_dict, seed=0), deterministic=False)
    assert log_stats.last_episode_stats is not None
    assert log_stats.last_episode_stats.truncated
    assert log_stats.last_episode_stats.episode_length == 4


def test_cartpole_episodes_never_exceed_the_limit(tmp_path: Path) -> None:
    stats = runner(n_episodes=20, max_episode_steps=10, seed=2).run(CARTPOLE, RANDOM, output_dir=tmp_path)
    assert stats["episode_length"]["max"] <= 10
    assert stats["episode_length"]["count"] == 20


def test_statistics_are_written_to_stats_tsv_and_returned(tmp_path: Path) -> None:
    stats = runner(n_episodes=3, max_episode_steps=5, seed=3).run(ENDLESS, RANDOM, output_dir=tmp_path)
    rows = read_stats_tsv(tmp_path / "stats.tsv")
    written = {(row["metric"], row["stat"]): float(row["value"]) for row in rows}
    assert {row["prefix"] for row in rows} == {"rollout"}
    for metric, values in stats.items():
        for stat, value in values.items():
            assert written[(metric, stat)] == pytest.approx(value)


def test_rerunning_in_one_process_prints_one_table_per_run(tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    loud = SequentialRolloutRunner(n_episodes=2, max_episode_steps=3, seed=4)
    for _ in range(3):
        loud.run(ENDLESS, RANDOM, output_dir=tmp_path)
        assert capsys.readouterr().out.count("rollout statistics") == 1
    assert registered_stats_writers() == ()
    # stats.tsv holds one header and one block of rows per run.
    rows = read_stats_tsv(tmp_path / "stats.tsv")
    assert len(rows) == 3 * 3 * 5


def test_silent_prints_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    runner(n_episodes=1, max_episode_steps=3).run(ENDLESS, RANDOM, output_dir=tmp_path)
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == ""


def test_same_seed_same_statistics_and_different_seed_differs(tmp_path: Path) -> None:
    def run(seed: int) -> dict[str, dict[str, float]]:
        return runner(n_episodes=5, max_episode_steps=20, seed=seed).run(ENDLESS, RANDOM, output_dir=tmp_path)

    assert run(11) == run(11)
    assert run(11) != run(12)


def test_seeded_runs_with_a_reused_env_instance_repeat(tmp_path: Path) -> None:
    env = GymMazeEnv("CartPole-v1")
    policy = RandomPolicy(env.action_spaces_dict)
    first = runner(n_episodes=4, seed=5).run_with(env=env, wrappers={}, agent=policy, output_dir=tmp_path)
    second = runner(n_episodes=4, seed=5).run_with(env=env, wrappers={}, agent=policy, output_dir=tmp_path)
    assert first == second


@pytest.mark.parametrize("env_spec", ["dict", "omegaconf", "factory", "instance"])
def test_env_may_be_a_config_a_factory_or_an_instance(tmp_path: Path, env_spec: str) -> None:
    env: Any = {"dict": ENDLESS, "omegaconf": OmegaConf.create(ENDLESS), "factory": make_endless_env,
                "instance": make_endless_env()}[env_spec]
    stats = runner(n_episodes=2, max_episode_steps=3).run(env, RANDOM, output_dir=tmp_path)
    assert stats["step_reward"]["count"] == 6


@pytest.mark.parametrize("wrappers", [
    {"maze_engine.wrappers.time_limit.TimeLimitWrapper": {"max_episode_steps": 2}},
    [{"_target_": "maze_engine.TimeLimitWrapper", "max_episode_steps": 2}],
    {TimeLimitWrapper: {"max_episode_steps": 2}},
])
def test_configured_wrappers_are_applied(tmp_path: Path, wrappers: Any) -> None:
    stats = runner(n_episodes=2, max_episode_steps=50).run(ENDLESS, RANDOM, wrappers=wrappers,
                                                           output_dir=tmp_path)
    assert stats["episode_length"]["max"] == 2


def test_policy_instance_is_used_as_is(tmp_path: Path) -> None:
    env = make_endless_env()
    calls = []

    class CountingPolicy(RandomPolicy):
        def compute_action(self, observation: Any, actor_id: Any = None, deterministic: bool = False) -> Any:
            calls.append(deterministic)
            return super().compute_action(observation, actor_id, deterministic)

    runner(n_episodes=2, max_episode_steps=3, deterministic=True).run(
        env, CountingPolicy(env.action_spaces_dict), output_dir=tmp_path)
    assert calls == [True] * 6


@pytest.mark.parametrize(("kwargs", "field"), [
    ({"n_episodes": 0}, "runner.n_episodes"),
    ({"n_episodes": 2.5}, "runner.n_episodes"),
    ({"max_episode_steps": -1}, "runner.max_episode_steps"),
    ({"seed": -3}, "seed"),
])
def test_bad_runner_arguments_name_the_field(kwargs: dict[str, Any], field: str) -> None:
    with pytest.raises(ConfigError, match=field):
        SequentialRolloutRunner(**kwargs)


@pytest.mark.parametrize(("env", "policy", "field"), [
    (lambda: "not an env", RANDOM, "env"),
    (42, RANDOM, "env"),
    ({"_target_": "maze_engine.make_gym_maze_env", "name": "NoSuchEnv-v0"}, RANDOM, "env.name"),
    (ENDLESS, None, "policy"),
    (ENDLESS, {"_target_": "maze_engine.no_such_policy"}, "_target_"),
])
def test_bad_env_or_policy_raise_config_errors(tmp_path: Path, env: Any, policy: Any, field: str) -> None:
    with pytest.raises(ConfigError, match=field):
        runner(n_episodes=1, max_episode_steps=2).run(env, policy, output_dir=tmp_path)

