"""Checkpoints and resume with real (tiny) CartPole trainings: a run stopped after k epochs and resumed ends
with exactly the configured epochs, each epoch once in stats.tsv and TensorBoard, the best model restored."""

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from maze_engine.core.stats.writers import read_stats_tsv
from maze_engine.training.checkpoint import CHECKPOINT_FILE, CheckpointError, read_checkpoint
from maze_engine.training.launch import build_training, train_from_config
from maze_engine.training.summary import read_summary

SCRIPT = Path(sys.executable).with_name("maze-run")


class Crash(Exception):
    """Stands for the process dying at that moment."""


def _stats_epochs(run_dir: Path) -> Counter[tuple[str, str, str, str]]:
    return Counter((row["epoch"], row["prefix"], row["metric"], row["stat"])
                   for row in read_stats_tsv(run_dir / "stats.tsv"))


def _assert_each_epoch_once(run_dir: Path, n_epochs: int) -> None:
    rows = _stats_epochs(run_dir)
    assert {int(epoch) for epoch, *_ in rows} == set(range(n_epochs))
    assert max(rows.values()) == 1, [key for key, count in rows.items() if count > 1][:3]


def _crash_in_epoch(epoch: int) -> Callable[[Any], bool]:
    def stop_when(trainer: Any) -> bool:
        if trainer.epoch == epoch:
            raise Crash(f"crash in epoch {epoch}")
        return False

    return stop_when


def test_stopped_then_resumed_run_has_the_configured_epochs(tmp_path: Path, tiny_cfg: Any) -> None:
    cfg = tiny_cfg("algorithm.n_epochs=4")
    run = build_training(cfg, run_dir=tmp_path)
    try:
        with pytest.raises(Crash):
            run.train(stop_when=_crash_in_epoch(2))
    finally:
        run.close()
    assert read_checkpoint(tmp_path).epoch == 2
    assert read_summary(tmp_path).stop_reason == "failed"

    resumed = build_training(cfg, resume=tmp_path)
    try:
        resumed.train()
    finally:
        resumed.close()
    assert resumed.trainer.epoch == 4
    summary = read_summary(tmp_path)
    assert (summary.epochs, summary.stop_reason, summary.resumed_at_epoch) == (4, "completed", 2)
    _assert_each_epoch_once(tmp_path, 4)
    assert read_checkpoint(tmp_path).epoch == 4


def test_statistics_written_after_the_last_checkpoint_appear_once(tmp_path: Path, tiny_cfg: Any) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    cfg = tiny_cfg("algorithm.n_epochs=4")
    run = build_training(cfg, run_dir=tmp_path)
    original = run.trainer.reporter

    class DiesAfterWritingEpoch2:
        def write_epoch(self, epoch: int, sections: Any) -> None:
            original.write_epoch(epoch, sections)
            if epoch == 2:
                raise Crash("died between the statistics and the checkpoint of epoch 2")

        def __getattr__(self, name: str) -> Any:
            return getattr(original, name)

    run.trainer.reporter = DiesAfterWritingEpoch2()  # type: ignore[assignment]
    try:
        with pytest.raises(Crash):
            run.train()
    finally:
        run.close()
    assert read_checkpoint(tmp_path).epoch == 2
    assert {int(epoch) for epoch, *_ in _stats_epochs(tmp_path)} == {0, 1, 2}

    resumed = build_training(cfg, resume=tmp_path)
    try:
        resumed.train()
    finally:
        resumed.close()
    _assert_each_epoch_once(tmp_path, 4)
    accumulator = EventAccumulator(str(tmp_path))
    accumulator.Reload()
    assert [event.step for event in accumulator.Scalars("train/episode_return/mean")] == [0, 1, 2, 3]


def test_resume_restores_weights_optimizer_counters_and_best_model(tmp_path: Path, tiny_cfg: Any) -> None:
    cfg = tiny_cfg("algorithm.n_epochs=2")
    first = build_training(cfg, run_dir=tmp_path)
    try:
        first.train()
        weights = {key: value.clone() for key, value in first.policy.state_dict().items()}
        steps, updates = first.trainer.total_env_steps, first.trainer.n_updates
        best = (first.model_selection.best_score, first.model_selection.best_epoch)
        best_weights = torch.load(tmp_path / "state_dict.pt", weights_only=True)
    finally:
        first.close()
    # As if the process died after saving a better model but before the checkpoint that records it.
    (tmp_path / "state_dict.pt").write_bytes(b"overwritten")

    resumed = build_training(tiny_cfg("algorithm.n_epochs=2"), resume=tmp_path)
    try:
        assert all(torch.equal(weights[key], value) for key, value in resumed.policy.state_dict().items())
        assert (resumed.trainer.total_env_steps, resumed.trainer.n_updates, resumed.trainer.epoch) == \
            (steps, updates, 2)
        assert (resumed.model_selection.best_score, resumed.model_selection.best_epoch) == best
        assert resumed.trainer.optimizer.state_dict()["state"]
        restored = torch.load(tmp_path / "state_dict.pt", weights_only=True)
        assert all(torch.equal(best_weights["policy"][key], value)
                   for key, value in restored["policy"].items())
        resumed.train()  # already finished: nothing to train
        assert resumed.trainer.epoch == 2
        assert "finished before this resume" in read_summary(tmp_path).stopped_because
    finally:
        resumed.close()


def test_checkpoint_every_epochs(tmp_path: Path, tiny_cfg: Any) -> None:
    run = build_training(tiny_cfg("algorithm.n_epochs=3", "checkpoint_every_epochs=2"), run_dir=tmp_path)
    seen: list[int | None] = []

    def look(trainer: Any) -> None:
        path = tmp_path / CHECKPOINT_FILE
        seen.append(read_checkpoint(tmp_path).epoch if path.is_file() else None)

    try:
        run.train(after_epoch=look)
    finally:
        run.close()
    assert seen == [None, 2, 2]
    assert read_checkpoint(tmp_path).epoch == 3  # and always when training ends


def test_resume_with_another_config_names_the_checkpoint(tmp_path: Path, tiny_cfg: Any) -> None:
    train_from_config(tiny_cfg("algorithm.n_epochs=1"), run_dir=tmp_path)
    with pytest.raises(CheckpointError, match=f"{tmp_path / CHECKPOINT_FILE} was written with a different "
                                              "config: algorithm.lr"):
        build_training(tiny_cfg("algorithm.n_epochs=2", "algorithm.lr=0.1"), resume=tmp_path)


def test_resume_key_continues_in_the_run_directory(tmp_path: Path, tiny_cfg: Any) -> None:
    train_from_config(tiny_cfg("algorithm.n_epochs=1"), run_dir=tmp_path / "run")
    summary = train_from_config(tiny_cfg("algorithm.n_epochs=3", f"resume={tmp_path / 'run'}"),
                                run_dir=tmp_path / "elsewhere")
    assert summary.epochs == 3 and summary.run_dir == str((tmp_path / "run").resolve())
    assert not (tmp_path / "elsewhere").exists()
    _assert_each_epoch_once(tmp_path / "run", 3)


@pytest.mark.slow
def test_killed_maze_run_resumes_to_the_configured_epochs(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    args = ["-cn", "conf_train", "model=flatten_concat", "algorithm.n_epochs=30", "algorithm.epoch_length=2",
            "algorithm.n_rollout_steps=16", "algorithm.eval_repeats=1", "algorithm.patience=0",
            "runner.n_envs=2", "silent=true"]
    command = [str(SCRIPT)] if SCRIPT.exists() else [sys.executable, "-m", "maze_engine.cli"]
    process = subprocess.Popen([*command, *args, f"hydra.run.dir={run_dir}"], cwd=tmp_path,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and process.poll() is None:
            path = run_dir / CHECKPOINT_FILE
            if path.is_file() and read_checkpoint(run_dir).epoch >= 3:
                break
            time.sleep(0.05)
        os.kill(process.pid, signal.SIGKILL)
    finally:
        process.wait(timeout=30)
    killed_at = read_checkpoint(run_dir).epoch
    assert 3 <= killed_at < 30, "the run finished before it could be killed"

    resumed = subprocess.run([*command, *args, f"resume={run_dir}"], cwd=tmp_path, capture_output=True,
                             text=True, timeout=300, check=False)
    assert resumed.returncode == 0, resumed.stderr
    summary = read_summary(run_dir)
    assert (summary.epochs, summary.stop_reason, summary.resumed_at_epoch) == (30, "completed", killed_at)
    _assert_each_epoch_once(run_dir, 30)
    assert not list(tmp_path.glob("outputs"))  # the resumed run wrote into its own directory only
