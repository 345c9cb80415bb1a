"""``maze-run -cn conf_train`` as a subprocess writes a run directory that ``maze-run`` then rolls out."""

import json
import os
import subprocess
import sys
from pathlib import Path

import yaml

from maze_engine.core.stats.writers import read_stats_tsv

SCRIPT = Path(sys.executable).with_name("maze-run")


def _maze_run(cwd: Path, *args: str, returncode: int = 0) -> subprocess.CompletedProcess[str]:
    command = [str(SCRIPT)] if SCRIPT.exists() else [sys.executable, "-m", "maze_engine.cli"]
    environment = {key: value for key, value in os.environ.items() if key != "HYDRA_FULL_ERROR"}
    result = subprocess.run([*command, *args], cwd=cwd, capture_output=True, text=True, timeout=300,
                            env=environment, check=False)
    assert result.returncode == returncode, f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    return result


TINY = ("model=flatten_concat", "algorithm.epoch_length=2", "algorithm.n_rollout_steps=16",
        "algorithm.eval_repeats=1", "algorithm.patience=0", "runner.n_envs=2")


def test_train_writes_run_directory_then_roll_out(tmp_path: Path) -> None:
    run_dir = tmp_path / "train"
    train = _maze_run(tmp_path, "-cn", "conf_train", "env=gym_env", "env.name=CartPole-v1", "algorithm=a2c",
                      "model=flatten_concat", "critic=template_state", "runner=dev", "algorithm.n_epochs=1",
                      "algorithm.epoch_length=2", "algorithm.n_rollout_steps=20", f"hydra.run.dir={run_dir}")
    assert "training statistics, epoch 0" in train.stdout
    for name in ("state_dict.pt", "spaces.json", "model.yaml", "config.yaml", "stats.tsv", "checkpoint.pt",
                 "summary.json", "learning_curve.png"):
        assert (run_dir / name).is_file(), name
    assert list(run_dir.glob("events.out.tfevents.*"))
    assert yaml.safe_load((run_dir / "config.yaml").read_text())["algorithm"]["n_rollout_steps"] == 20

    rollout_dir = tmp_path / "rollout"
    _maze_run(tmp_path, "policy=torch_policy", "env=gym_env", "env.name=CartPole-v1", f"input_dir={run_dir}",
              "runner=sequential", "runner.n_episodes=2", f"hydra.run.dir={rollout_dir}")
    counts = {row["metric"]: float(row["value"]) for row in read_stats_tsv(rollout_dir / "stats.tsv")
              if row["stat"] == "count"}
    assert counts["episode_return"] == 2


def test_silent_training_prints_no_table(tmp_path: Path) -> None:
    result = _maze_run(tmp_path, "-cn", "conf_train", "model=flatten_concat", "algorithm.n_epochs=1",
                       "algorithm.epoch_length=1", "algorithm.n_rollout_steps=10", "algorithm.eval_repeats=0",
                       "silent=true", f"hydra.run.dir={tmp_path / 'run'}")
    assert "statistics" not in result.stdout and "update/s" not in result.stderr
    assert (tmp_path / "run" / "state_dict.pt").is_file()


def test_training_ends_with_a_summary_and_a_log(tmp_path: Path) -> None:
    result = _maze_run(tmp_path, "-cn", "conf_train", *TINY, "algorithm.n_epochs=2")
    run_dir = next((tmp_path / "outputs").glob("*/*"))
    summary = json.loads((run_dir / "summary.json").read_text())
    lines = result.stdout.splitlines()
    start = lines.index("training finished after 2 epochs: trained the 2 configured epochs")
    assert lines[start + 1] == f"  run directory   {run_dir.resolve()}"
    assert f"in epoch {summary['best_epoch']}" in lines[start + 2]
    assert lines[start + 3] == f"  weights         {run_dir.resolve() / 'state_dict.pt'}"
    log = (run_dir / "cli.log").read_text()
    assert "training A2C on CartPole-v1" in log and "epoch 1: train return" in log
    assert "training finished after 2 epochs" in log


def test_resume_from_the_command_line(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    _maze_run(tmp_path, "-cn", "conf_train", *TINY, "algorithm.n_epochs=2", "silent=true",
              f"hydra.run.dir={run_dir}")
    result = _maze_run(tmp_path, "-cn", "conf_train", *TINY, "algorithm.n_epochs=3", f"resume={run_dir}")
    assert "training finished after 3 epochs: trained the 3 configured epochs" in result.stdout
    assert "training statistics, epoch 2" in result.stdout and "epoch 1" not in result.stdout
    assert sorted({row["epoch"] for row in read_stats_tsv(run_dir / "stats.tsv")}) == ["0", "1", "2"]
    assert not (tmp_path / "outputs").exists()
    # The run's .hydra/ keeps the overrides of its first start, which a resume must repeat.
    overrides = yaml.safe_load((run_dir / ".hydra" / "overrides.yaml").read_text())
    assert "algorithm.n_epochs=2" in overrides and not any("resume" in item for item in overrides)

    refused = _maze_run(tmp_path, "-cn", "conf_train", "algorithm.n_epochs=3", f"resume={run_dir}",
                        returncode=2)
    assert refused.stderr.startswith(f"maze-run: error: resume: {run_dir / 'checkpoint.pt'} was written "
                                     "with a different config")
    missing = _maze_run(tmp_path, "-cn", "conf_train", f"resume={tmp_path / 'nothing'}", returncode=2)
    assert "checkpoint.pt not found" in missing.stderr
    assert not (tmp_path / "nothing").exists()  # no empty directory left behind


def test_bad_torch_threads_is_a_config_error(tmp_path: Path) -> None:
    result = _maze_run(tmp_path, "-cn", "conf_train", "torch_threads=many", returncode=2)
    assert result.stderr.startswith("maze-run: error: torch_threads: expected an integer >= 0")
    assert not (tmp_path / "outputs").exists()
