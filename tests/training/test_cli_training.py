"""``maze-run -cn conf_train`` as a subprocess writes a run directory that ``maze-run`` then rolls out."""

import os
import subprocess
import sys
from pathlib import Path

import yaml

from maze_engine.core.stats.writers import read_stats_tsv

SCRIPT = Path(sys.executable).with_name("maze-run")


def _maze_run(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    command = [str(SCRIPT)] if SCRIPT.exists() else [sys.executable, "-m", "maze_engine.cli"]
    environment = {key: value for key, value in os.environ.items() if key != "HYDRA_FULL_ERROR"}
    result = subprocess.run([*command, *args], cwd=cwd, capture_output=True, text=True, timeout=300,
                            env=environment, check=False)
    assert result.returncode == 0, f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    return result


def test_train_writes_run_directory_then_roll_out(tmp_path: Path) -> None:
    run_dir = tmp_path / "train"
    train = _maze_run(tmp_path, "-cn", "conf_train", "env=gym_env", "env.name=CartPole-v1", "algorithm=a2c",
                      "model=flatten_concat", "critic=template_state", "runner=dev", "algorithm.n_epochs=1",
                      "algorithm.epoch_length=2", "algorithm.n_rollout_steps=20", f"hydra.run.dir={run_dir}")
    assert "training statistics, epoch 0" in train.stdout
    for name in ("state_dict.pt", "spaces.json", "model.yaml", "config.yaml", "stats.tsv"):
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
