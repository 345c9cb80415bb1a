"""``maze-run`` as a user runs it: a subprocess per command, checked by exit code, output and files."""

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from omegaconf import OmegaConf

from maze_engine import ConfigError, read_trajectories
from maze_engine.cli import run_config
from maze_engine.core.stats.writers import read_stats_tsv

SCRIPT = Path(sys.executable).with_name("maze-run")


def maze_run(tmp_path: Path, *args: str, run_dir: str | None = "run") -> subprocess.CompletedProcess[str]:
    """Run ``maze-run args`` in ``tmp_path``; output goes to ``tmp_path/run_dir`` (None: Hydra's default)."""
    command = [str(SCRIPT)] if SCRIPT.exists() else [sys.executable, "-m", "maze_engine.cli"]
    if run_dir is not None:
        args = (*args, f"hydra.run.dir={tmp_path / run_dir}")
    environment = {key: value for key, value in os.environ.items()
                   if key not in ("DISPLAY", "WAYLAND_DISPLAY", "HYDRA_FULL_ERROR")}
    return subprocess.run([*command, *args], cwd=tmp_path, capture_output=True, text=True, timeout=180,
                          env=environment, check=False)


def assert_ok(result: subprocess.CompletedProcess[str]) -> None:
    assert result.returncode == 0, f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    assert "Traceback" not in result.stderr, result.stderr


def test_seed_command_default_parallel_rollout(tmp_path: Path) -> None:
    result = maze_run(tmp_path, "env=gym_env", "env.name=CartPole-v1", "runner.n_episodes=4")
    assert_ok(result)
    assert "rollout statistics" in result.stdout
    run = tmp_path / "run"
    counts = {row["metric"]: float(row["value"]) for row in read_stats_tsv(run / "stats.tsv")
              if row["stat"] == "count"}
    assert counts["episode_return"] == 4
    # The default runner records trajectories and event logs into the run directory.
    assert len(list(read_trajectories(run / "trajectory_data"))) == 4
    assert (run / ".hydra" / "config.yaml").is_file()


def test_seed_command_sequential_render_on_a_headless_machine(tmp_path: Path) -> None:
    result = maze_run(tmp_path, "env=gym_env", "env.name=CartPole-v1", "runner=sequential",
                      "runner.n_episodes=1", "runner.render=true")
    assert_ok(result)
    frames = list((tmp_path / "run" / "render").rglob("*.png"))
    # Without pygame each step is printed as text; with it frames are saved. Either way: no crash.
    assert frames or "episode 0 step 1 action=" in result.stdout
    assert "episode_length" in result.stdout


def test_seed_command_parallel_with_step_limit(tmp_path: Path) -> None:
    result = maze_run(tmp_path, "env=gym_env", "env.name=CartPole-v1", "runner.n_processes=3",
                      "runner.n_episodes=100", "runner.max_episode_steps=10",
                      "runner.record_trajectory=false")
    assert_ok(result)
    stats = {(row["metric"], row["stat"]): float(row["value"])
             for row in read_stats_tsv(tmp_path / "run" / "stats.tsv")}
    assert stats[("episode_length", "count")] == 100
    assert stats[("episode_length", "max")] <= 10
    assert "100/100" in result.stderr  # the progress bar finished


def test_output_directory_is_managed_by_hydra(tmp_path: Path) -> None:
    result = maze_run(tmp_path, "runner=sequential", "runner.n_episodes=1", "runner.record_trajectory=false",
                      "runner.record_event_logs=false", run_dir=None)
    assert_ok(result)
    stats_files = list((tmp_path / "outputs").glob("*/*/stats.tsv"))
    assert len(stats_files) == 1
    # cli.log holds the run's log: the command, the rollout and its statistics.
    log = (stats_files[0].parent / "cli.log").read_text()
    assert "maze-run runner=sequential" in log and "rolling out 1 episodes" in log
    assert "rollout done: step_reward mean" in log
    assert "INFO" not in result.stdout + result.stderr  # the log lines stay out of the console


def test_a_failing_run_keeps_a_directory_it_wrote_into(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    (run / "notes.txt").write_text("mine")
    result = maze_run(tmp_path, "env.name=CartPol-v1")
    assert result.returncode == 2
    assert (run / "notes.txt").read_text() == "mine"
    assert "env.name: 'CartPol-v1'" in (run / "cli.log").read_text()


@pytest.mark.parametrize(("args", "message"), [
    (("runner.n_episode=3",), "runner.n_episode: no such key in runner; did you mean runner.n_episodes=3?"),
    (("runner=paralel",), "runner=paralel: no such option of runner; did you mean runner=parallel?"),
    (("-cn", "conf_train", "algorithm=ppp"), "algorithm=ppp: no such option of algorithm; did you mean "
                                             "algorithm=ppo? (options: a2c, bc, ppo)"),
    (("runner.n_episodes=ten",), "runner.n_episodes: Value 'ten' of type 'str' could not be converted to "
                                 "Integer"),
    (("-cn", "conf_rolout"), "-cn conf_rolout: no such config; did you mean -cn conf_rollout?"),
])
def test_config_mistakes_are_one_line_with_a_suggestion(tmp_path: Path, args: tuple[str, ...],
                                                       message: str) -> None:
    result = maze_run(tmp_path, *args, run_dir=None)
    assert result.returncode == 2, result.stderr
    assert len(result.stderr.splitlines()) == 1
    assert result.stderr.startswith(f"maze-run: error: {message}")
    assert "+runner" not in result.stderr and "HYDRA_FULL_ERROR" not in result.stderr
    assert not (tmp_path / "outputs").exists()


def test_full_error_still_shows_hydras_report(tmp_path: Path) -> None:
    command = [str(SCRIPT)] if SCRIPT.exists() else [sys.executable, "-m", "maze_engine.cli"]
    result = subprocess.run([*command, "runner.n_episode=3"], cwd=tmp_path, capture_output=True, text=True,
                            timeout=180, env={**os.environ, "HYDRA_FULL_ERROR": "1"}, check=False)
    assert result.returncode != 0 and "Traceback" in result.stderr


@pytest.mark.parametrize(("args", "field"), [
    (("env.name=CartPol-v1",), "env.name"),
    (("runner.n_episodes=0",), "runner.n_episodes"),
    (("policy=torch_policy",), "input_dir"),
    (("runner=dev",), "runner: expected a rollout runner"),
])
def test_engine_config_errors_are_one_line_with_exit_code_2(tmp_path: Path, args: tuple[str, ...],
                                                           field: str) -> None:
    result = maze_run(tmp_path, *args, run_dir=None)
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines == [lines[0]] and lines[0].startswith(f"maze-run: error: {field}")
    # The run failed before it started: no empty outputs/<date>/<time>/ is left behind.
    assert not (tmp_path / "outputs").exists()


def test_help_lists_groups_and_examples(tmp_path: Path) -> None:
    result = maze_run(tmp_path, "--help", run_dir=None)
    assert_ok(result)
    for text in ("maze-run", "== Config groups ==", "runner: ", "sequential", "parallel", "env: gym_env",
                 "policy: published_policy, random_policy, torch_policy", "wrappers: ",
                 "runner.n_processes=3",
                 "-cn conf_train"):
        assert text in result.stdout
    assert not (tmp_path / "outputs").exists()
    train_help = maze_run(tmp_path, "-cn", "conf_train", "--help", run_dir=None)
    assert_ok(train_help)
    assert "algorithm: a2c, bc, ppo" in train_help.stdout and "torch_threads: 1" in train_help.stdout


def test_configs_with_an_algorithm_go_to_training(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[Any] = []
    monkeypatch.setattr("maze_engine.training.launch.train_from_config", calls.append)
    cfg = OmegaConf.create({"algorithm": {"n_epochs": 1}, "env": {}})
    run_config(cfg)
    assert calls == [cfg]


def test_configs_without_an_algorithm_go_to_rollouts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match="policy: missing"):
        run_config(OmegaConf.create({"runner": {"_target_": "maze_engine.SequentialRolloutRunner"},
                                     "env": {"_target_": "maze_engine.make_gym_maze_env"}}))



@pytest.mark.slow
def test_train_then_roll_out_the_trained_policy(tmp_path: Path) -> None:
    train = maze_run(tmp_path, "-cn", "conf_train", "env=gym_env", "env.name=CartPole-v1", "algorithm=a2c",
                     "model=vector_obs", "critic=template_state", "runner=dev", "algorithm.n_epochs=1",
                     "algorithm.epoch_length=2", "algorithm.eval_repeats=1", run_dir="train")
    assert_ok(train)
    assert (tmp_path / "train" / "state_dict.pt").is_file()
    rollout = maze_run(tmp_path, "policy=torch_policy", "env=gym_env", "env.name=CartPole-v1",
                       f"input_dir={tmp_path / 'train'}", "runner.n_episodes=2", "runner.n_processes=2",
                       run_dir="rollout")
    assert_ok(rollout)
    counts = {row["metric"]: float(row["value"]) for row in read_stats_tsv(tmp_path / "rollout" / "stats.tsv")
              if row["stat"] == "count"}
    assert counts["episode_length"] == 2
