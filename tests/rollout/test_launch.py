"""rollout_from_config: composed configs run as rollouts; config mistakes are ConfigErrors."""

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from maze_engine import ConfigError, GymMazeEnv, ObservationNormalizationWrapper
from maze_engine.config import compose_config
from maze_engine.rollout.components import apply_wrappers
from maze_engine.rollout.launch import (
    RUN_STATISTICS_FILE,
    default_output_dir,
    rollout_from_config,
    with_run_statistics,
)

QUICK = ["runner.n_episodes=3", "runner.max_episode_steps=8", "runner.silent=true",
         "runner.record_trajectory=false", "runner.record_event_logs=false"]


@pytest.mark.parametrize("runner", ["sequential", "parallel"])
def test_composed_config_runs_and_top_level_seed_applies(tmp_path: Path, runner: str) -> None:
    cfg = compose_config(overrides=[f"runner={runner}", *QUICK, "seed=5", "runner.n_processes=2"
                                    if runner == "parallel" else "runner.render=false"])
    first = rollout_from_config(cfg, output_dir=tmp_path)
    assert first["episode_length"]["count"] == 3
    assert first["episode_length"]["max"] <= 8
    assert rollout_from_config(cfg, output_dir=tmp_path) == first
    assert (tmp_path / "stats.tsv").is_file()


def test_plain_mapping_works_like_a_composed_config(tmp_path: Path) -> None:
    config = {"runner": {"_target_": "maze_engine.SequentialRolloutRunner", "n_episodes": 2,
                         "max_episode_steps": 4, "silent": True},
              "env": {"_target_": "maze_engine.make_gym_maze_env", "name": "CartPole-v1"},
              "policy": {"_target_": "maze_engine.RandomPolicy"}, "wrappers": {}, "seed": 1}
    assert rollout_from_config(config, output_dir=tmp_path)["episode_length"]["count"] == 2


@pytest.mark.parametrize(("overrides", "field"), [
    (["runner=dev"], "runner: expected a rollout runner"),
    ([*QUICK, "policy=torch_policy"], "input_dir: this policy is loaded from a training run"),
    ([*QUICK, "env.name=NoSuchEnv-v0"], "env.name"),
])
def test_config_mistakes_are_config_errors(tmp_path: Path, overrides: list[str], field: str) -> None:
    with pytest.raises(ConfigError, match=field):
        rollout_from_config(compose_config(overrides=overrides), output_dir=tmp_path)


def test_missing_groups_are_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="policy: missing from the rollout config"):
        rollout_from_config({"runner": {"_target_": "maze_engine.SequentialRolloutRunner"},
                             "env": {"_target_": "maze_engine.make_gym_maze_env", "name": "CartPole-v1"}},
                            output_dir=tmp_path)


def test_output_goes_to_the_working_directory_outside_hydra(tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert default_output_dir() == tmp_path


NORMALIZATION = "maze_engine.ObservationNormalizationWrapper"


@pytest.mark.parametrize("wrappers", [
    {NORMALIZATION: {"default_strategy": "mean_zero_std_one"}},
    [{"_target_": NORMALIZATION, "default_strategy": "mean_zero_std_one"}],
    {"_target_": NORMALIZATION, "default_strategy": "mean_zero_std_one"},
])
def test_trained_runs_normalization_statistics_are_loaded(tmp_path: Path, wrappers: Any) -> None:
    statistics = {"observation": {"mean": [1.0, 2.0, 3.0, 4.0], "std": [2.0, 2.0, 2.0, 2.0]}}
    trained = ObservationNormalizationWrapper(GymMazeEnv("CartPole-v1"), statistics_dump=None)
    trained.set_statistics(statistics)
    trained.save_statistics(tmp_path / RUN_STATISTICS_FILE)

    env = apply_wrappers(GymMazeEnv("CartPole-v1"), with_run_statistics(wrappers, tmp_path))
    assert isinstance(env, ObservationNormalizationWrapper)
    assert env.missing_statistics() == []
    np.testing.assert_allclose(env.get_statistics()["observation"]["mean"], [1.0, 2.0, 3.0, 4.0])


@pytest.mark.parametrize("input_dir", ["", None, "missing"])
def test_wrappers_are_untouched_without_run_statistics(tmp_path: Path, input_dir: str | None) -> None:
    wrappers = {NORMALIZATION: {"statistics_dump": None}}
    directory = str(tmp_path / input_dir) if input_dir else input_dir
    assert with_run_statistics(wrappers, directory) is wrappers


@pytest.mark.parametrize("runner", ["sequential", "parallel"])
def test_episodes_run_to_the_envs_own_time_limit_by_default(tmp_path: Path, runner: str) -> None:
    # Acrobot-v1 ends at its own limit of 500 steps under a random policy (this seed never swings up), past
    # the 200 steps rollouts used to cut episodes at.
    cfg = compose_config(overrides=[f"runner={runner}", "env.name=Acrobot-v1", "runner.n_episodes=1",
                                    "runner.silent=true", "runner.record_trajectory=false",
                                    "runner.record_event_logs=false", "seed=0"])
    assert cfg.runner.max_episode_steps is None
    stats = rollout_from_config(cfg, output_dir=tmp_path)
    assert stats["episode_length"]["max"] == 500


def test_max_episode_steps_cuts_episodes_when_asked(tmp_path: Path) -> None:
    cfg = compose_config(overrides=["runner=sequential", "env.name=Acrobot-v1", "runner.n_episodes=1",
                                    "runner.max_episode_steps=50", *QUICK[2:], "seed=0"])
    assert rollout_from_config(cfg, output_dir=tmp_path)["episode_length"]["max"] == 50
