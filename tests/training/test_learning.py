"""A2C and PPO learn CartPole-v1 (mean evaluation return >= 195) in bounded time; the trained policy then
drives an AgentDeployment against an external gymnasium env."""

import time
from pathlib import Path

import gymnasium as gym
import pytest

from maze_engine import AgentDeployment, GymMazeEnv, load_torch_policy
from maze_engine.config import compose_config
from maze_engine.training.launch import build_training

TIME_BUDGET_S = 150
SMALL_CRITIC = ["model.critic.networks.0.hidden_units=[64,64]"]
SETTINGS = {
    # Both run 8 envs with short rollouts; evaluation is deterministic over 5 episodes after each epoch.
    "a2c": ["algorithm=a2c", "algorithm.lr=0.001", "algorithm.n_rollout_steps=32",
            "algorithm.gae_lambda=0.95", "algorithm.normalize_advantages=true", "algorithm.entropy_coef=0.0"],
    "ppo": ["algorithm=ppo", "algorithm.lr=0.001", "algorithm.n_rollout_steps=32", "algorithm.gae_lambda=0.8",
            "algorithm.batch_size=256", "algorithm.n_optimization_epochs=10", "algorithm.entropy_coef=0.0"],
}


@pytest.mark.slow
@pytest.mark.parametrize("algorithm", ["a2c", "ppo"])
def test_learns_cartpole_then_drives_a_deployment(algorithm: str, tmp_path: Path) -> None:
    cfg = compose_config("conf_train", [
        "model=flatten_concat", *SMALL_CRITIC, *SETTINGS[algorithm], "algorithm.epoch_length=10",
        "algorithm.eval_repeats=5", "algorithm.deterministic_eval=true", "algorithm.patience=0",
        "runner.n_envs=8", "runner.n_eval_envs=5", "silent=true"])
    run = build_training(cfg, run_dir=tmp_path)
    started, best = time.perf_counter(), 0.0
    try:
        while time.perf_counter() - started < TIME_BUDGET_S and best < 195:
            stats = run.train(n_epochs=1)
            best = max(best, stats["eval"]["episode_return"]["mean"])
    finally:
        run.close()
    assert best >= 195, f"best mean evaluation return {best} after {time.perf_counter() - started:.0f} s"

    # The best model was saved on that evaluation: load it from the run directory and deploy it against an
    # external env, asking it for its most likely action like the evaluation did.
    policy = load_torch_policy(tmp_path)
    external = gym.make("CartPole-v1")
    deployment = AgentDeployment(policy=policy, env=GymMazeEnv("CartPole-v1"))
    state, _ = external.reset(seed=0)
    reward, done, episode_return = None, False, 0.0
    while not done:
        request = deployment.observe(state, reward, done, {})
        action = deployment.resume(policy.compute_action(request.observation, request.actor_id,
                                                         deterministic=True))
        state, reward, terminated, truncated, _ = external.step(action)
        episode_return += float(reward)
        done = terminated or truncated
    deployment.close(state, reward, done, {})
    assert episode_return >= 100


@pytest.mark.slow
@pytest.mark.parametrize("algorithm", ["a2c", "ppo"])
def test_the_defaults_solve_cartpole_in_well_under_a_minute(algorithm: str, tmp_path: Path) -> None:
    from maze_engine.training.launch import train_from_config

    summary = train_from_config(compose_config("conf_train", [f"algorithm={algorithm}", "silent=true"]),
                                run_dir=tmp_path)
    assert summary.best_return is not None and summary.best_return >= 475, summary.format()
    assert summary.stop_reason in ("completed", "patience") and summary.seconds < 60, summary.format()
