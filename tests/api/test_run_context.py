"""RunContext beyond the seed snippets: process state, rollout and evaluate, errors, scripts with workers."""

import logging
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from maze_engine import ConfigError, GymMazeEnv, PPOAlgorithmConfig
from maze_engine.api.run_context import RunContext

TINY = {"algorithm.n_epochs": 1, "algorithm.epoch_length": 2, "algorithm.n_rollout_steps": 20,
        "algorithm.eval_repeats": 1, "runner.n_envs": 2}


def test_leaves_argv_cwd_and_logging_as_found(tmp_path: Path) -> None:
    argv, cwd = list(sys.argv), os.getcwd()
    handlers = list(logging.getLogger().handlers)
    rc = RunContext(model="flatten_concat", overrides=TINY, silent=True, run_dir=tmp_path)
    rc.train()
    rc.evaluate(n_episodes=1)
    rc.close()
    assert sys.argv == argv and os.getcwd() == cwd
    assert logging.getLogger().handlers == handlers


def test_rollout_and_evaluate_return_statistics(tmp_path: Path) -> None:
    with RunContext(model="flatten_concat", overrides=TINY, silent=True, run_dir=tmp_path) as rc:
        rc.train()
        rolled = rc.rollout(n_episodes=3, max_episode_steps=15, record_trajectory=True)
        assert rolled["episode_length"]["count"] == 3 and rolled["episode_length"]["max"] <= 15
        assert (tmp_path / "rollout" / "stats.tsv").is_file()
        assert (tmp_path / "rollout" / "trajectory_data").is_dir()
        evaluated = rc.evaluate(n_episodes=4, deterministic=True, n_envs=2)
        assert evaluated["episode_return"]["count"] == 4


def test_policy_is_available_before_training(tmp_path: Path) -> None:
    with RunContext(model="flatten_concat", overrides=TINY, silent=True, run_dir=tmp_path) as rc:
        action = rc.compute_action(GymMazeEnv("CartPole-v1").reset(), deterministic=True)
        assert action["action"] in (0, 1)


def test_ppo_config_object_selects_ppo(tmp_path: Path) -> None:
    config = PPOAlgorithmConfig(n_epochs=1, epoch_length=1, n_rollout_steps=16, batch_size=8, eval_repeats=0)
    with RunContext(algorithm=config, model="flatten_concat", silent=True, run_dir=tmp_path) as rc:
        assert type(rc.trainer).__name__ == "PPO"
        assert rc.train()["learner"]["clip_fraction"]["count"] == 1


def test_plain_values_are_type_checked() -> None:
    with pytest.raises(ConfigError, match="algorithm.lr"):
        RunContext(overrides={"algorithm.lr": "fast"})
    with pytest.raises(ConfigError, match="algorithm.learning_rate"):
        RunContext(algorithm={"learning_rate": 0.1})


def test_unknown_option_names_the_group() -> None:
    with pytest.raises(ConfigError, match="algorithm=sac"):
        RunContext(algorithm="sac")


def test_env_instance_is_refused() -> None:
    with pytest.raises(ConfigError, match="env: expected a factory"):
        RunContext(env=GymMazeEnv("CartPole-v1"))


def test_local_runner_from_a_script(tmp_path: Path) -> None:
    # The workers are spawned: they import the script, whose top-level code is guarded by __main__.
    script = tmp_path / "train_script.py"
    script.write_text(textwrap.dedent(f"""
        from maze_engine import GymMazeEnv
        from maze_engine.api.run_context import RunContext

        def make_env():
            return GymMazeEnv("CartPole-v1")

        if __name__ == "__main__":
            rc = RunContext(env=lambda: make_env(), runner="local", model="flatten_concat",
                            overrides={TINY!r}, silent=True, run_dir={str(tmp_path / "run")!r})
            stats = rc.train()
            rc.close()
            print("steps", int(stats["train"]["step_reward"]["count"]))
    """))
    result = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True,
                            timeout=180, check=False)
    assert result.returncode == 0, result.stderr
    assert "steps 80" in result.stdout
