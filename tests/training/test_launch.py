"""train_from_config: the run directory, reloading the best model, runners, normalization, bad configs."""

from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import yaml

from maze_engine import AgentDeployment, ConfigError, GymMazeEnv, load_torch_policy
from maze_engine.config import compose_config
from maze_engine.core.stats.writers import read_stats_tsv
from maze_engine.training.launch import build_training, train_from_config

FAST = ["model=flatten_concat", "algorithm.n_epochs=2", "algorithm.epoch_length=2",
        "algorithm.n_rollout_steps=16", "algorithm.eval_repeats=2", "runner.n_envs=2"]


def _cfg(*overrides: str) -> Any:
    return compose_config("conf_train", [*FAST, *overrides, "silent=true"])


def test_run_directory_holds_model_config_and_statistics(tmp_path: Path) -> None:
    stats = train_from_config(_cfg(), run_dir=tmp_path).last_stats
    assert stats["eval"]["episode_return"]["count"] == 2
    for name in ("state_dict.pt", "spaces.json", "model.yaml", "config.yaml", "stats.tsv"):
        assert (tmp_path / name).is_file(), name
    assert list(tmp_path.glob("events.out.tfevents.*"))
    config = yaml.safe_load((tmp_path / "config.yaml").read_text())
    assert config["algorithm"]["epoch_length"] == 2 and config["runner"]["type"] == "dev"
    rows = read_stats_tsv(tmp_path / "stats.tsv")
    assert {row["prefix"] for row in rows} == {"train", "eval", "learner", "time"}
    assert {row["epoch"] for row in rows} == {"0", "1"}
    assert any(row["metric"] == "episode_return" and row["prefix"] == "eval" for row in rows)


def test_tensorboard_tags_are_the_documented_ones(tmp_path: Path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    train_from_config(_cfg("algorithm.n_epochs=1"), run_dir=tmp_path)
    accumulator = EventAccumulator(str(tmp_path))
    accumulator.Reload()
    tags = set(accumulator.Tags()["scalars"])
    for tag in ("train/episode_return/mean", "eval/episode_return/mean", "learner/policy_loss/mean",
                "learner/value_loss/mean", "learner/entropy/mean", "learner/grad_norm/mean",
                "learner/learning_rate/mean", "time/steps_per_second/mean"):
        assert tag in tags, tag


def test_best_model_reloads_and_acts_the_same(tmp_path: Path) -> None:
    run = build_training(_cfg(), run_dir=tmp_path)
    try:
        run.train()
        best_epoch_state = {key: value.clone() for key, value in run.policy.state_dict().items()}
        # Make the reloaded weights comparable: save the current weights as the "best" model.
        run.save_model()
        reloaded = load_torch_policy(tmp_path)
        env = GymMazeEnv("CartPole-v1")
        env.seed(3)
        observation = env.reset()
        for _ in range(20):
            expected = run.policy.compute_action(observation, deterministic=True)
            assert reloaded.compute_action(observation, deterministic=True) == expected
            observation, _, done, _ = env.step(expected)
            if done:
                observation = env.reset()
        assert best_epoch_state.keys() == reloaded.state_dict().keys()
    finally:
        run.close()


def test_model_selection_writes_the_best_weights(tmp_path: Path) -> None:
    import torch

    run = build_training(_cfg("algorithm.n_epochs=3"), run_dir=tmp_path)
    saved: list[dict[str, Any]] = []
    original = run.model_selection.save

    def save_and_remember() -> None:
        assert original is not None
        original()
        saved.append({key: value.clone() for key, value in run.policy.state_dict().items()})

    run.model_selection.save = save_and_remember
    try:
        run.train()
    finally:
        run.close()
    on_disk = torch.load(tmp_path / "state_dict.pt", weights_only=True)["policy"]
    assert saved and all(torch.equal(on_disk[key], value) for key, value in saved[-1].items())


def test_local_runner_trains(tmp_path: Path) -> None:
    stats = train_from_config(_cfg("runner=local", "runner.n_envs=2", "runner.n_processes=2",
                                   "algorithm.n_epochs=1"), run_dir=tmp_path).last_stats
    assert stats["train"]["step_reward"]["count"] == 2 * 16 * 2
    assert (tmp_path / "state_dict.pt").is_file()


def test_ppo_from_config(tmp_path: Path) -> None:
    cfg = _cfg("algorithm=ppo", "algorithm.n_epochs=1", "algorithm.epoch_length=2",
               "algorithm.n_rollout_steps=16", "algorithm.batch_size=8")
    stats = train_from_config(cfg, run_dir=tmp_path).last_stats
    assert "clip_fraction" in stats["learner"]


def test_normalization_statistics_are_estimated_once_and_saved(tmp_path: Path, monkeypatch: Any) -> None:
    monkeypatch.chdir(tmp_path)  # the wrapper's own statistics_dump is relative to the working directory
    wrappers = {"maze_engine.ObservationNormalizationWrapper": {"statistics_dump": None}}
    cfg = dict(_as_container(_cfg("algorithm.n_epochs=1", "runner.normalization_samples=50")))
    cfg["wrappers"] = wrappers
    run = build_training(cfg, run_dir=tmp_path / "run")
    try:
        assert (tmp_path / "run" / "statistics.json").is_file()
        statistics = run.env_factory.statistics
        assert statistics is not None and "observation" in statistics
        observation = run.trainer.env.reset()["observation"]
        assert np.abs(observation).max() < 10  # normalized
        run.train()
    finally:
        run.close()


def _as_container(cfg: Any) -> Any:
    from omegaconf import OmegaConf

    return OmegaConf.to_container(cfg, resolve=True)


@pytest.mark.parametrize("change, field", [
    ({"runner": {"type": "cloud"}}, "runner.type"),
    ({"algorithm": {"_target_": "maze_engine.A2CAlgorithmConfig", "lr": -1.0}}, "algorithm.lr"),
    ({"model": None}, "model"),
    ({"env": {"_target_": "maze_engine.make_gym_maze_env", "name": "NoSuchEnv-v0"}}, "env.name"),
])
def test_bad_config_names_the_key(tmp_path: Path, change: dict[str, Any], field: str) -> None:
    cfg = {**_as_container(_cfg()), **change}
    with pytest.raises(ConfigError, match=field):
        train_from_config(cfg, run_dir=tmp_path)


def test_continue_from_input_dir(tmp_path: Path) -> None:
    train_from_config(_cfg("algorithm.n_epochs=1"), run_dir=tmp_path / "first")
    cfg = _cfg("algorithm.n_epochs=1", f"input_dir={tmp_path / 'first'}")
    run = build_training(cfg, run_dir=tmp_path / "second")
    try:
        import torch

        first = torch.load(tmp_path / "first" / "state_dict.pt", weights_only=True)["policy"]
        assert all(torch.equal(first[key], value) for key, value in run.policy.state_dict().items())
    finally:
        run.close()


def test_trained_policy_drives_an_agent_deployment(tmp_path: Path) -> None:
    train_from_config(_cfg("algorithm.n_epochs=1"), run_dir=tmp_path)
    deployment = AgentDeployment(policy=load_torch_policy(tmp_path), env=GymMazeEnv("CartPole-v1"))
    external = gym.make("CartPole-v1")
    state, _ = external.reset(seed=1)
    reward, done, steps = None, False, 0
    while not done:
        action = deployment.act(state, reward, done, {})
        assert external.action_space.contains(action)
        state, reward, terminated, truncated, _ = external.step(action)
        done, steps = terminated or truncated, steps + 1
    deployment.close(state, reward, done, {})
    assert steps > 0
