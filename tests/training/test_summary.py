"""The end of a training run: summary.json and its text for each way training stops, the learning curve PNG,
and torch_threads."""

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from maze_engine import ConfigError
from maze_engine.training.launch import build_training, set_torch_threads, train_from_config
from maze_engine.training.plots import (
    LEARNING_CURVE_FILE,
    LearningCurvePlotter,
    plot_learning_curve,
    read_curves,
)
from maze_engine.training.summary import SUMMARY_FILE, TrainingSummary, read_summary

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_completed_run_sums_up(tmp_path: Path, tiny_cfg: Any) -> None:
    summary = train_from_config(tiny_cfg("algorithm.n_epochs=2"), run_dir=tmp_path)
    assert isinstance(summary, TrainingSummary)
    assert (summary.epochs, summary.n_epochs, summary.stop_reason) == (2, 2, "completed")
    assert summary.stopped_because == "trained the 2 configured epochs"
    assert summary.best_return is not None and summary.best_epoch in (0, 1) and summary.selected_by == "eval"
    for path in (summary.weights, summary.checkpoint, summary.learning_curve):
        assert path is not None and Path(path).is_file() and Path(path).parent == tmp_path.resolve()
    assert summary.total_env_steps == 2 * 2 * 16 * 2 and summary.seconds > 0
    assert summary.last_stats["eval"]["episode_return"]["count"] == 1
    on_disk = json.loads((tmp_path / SUMMARY_FILE).read_text())
    assert on_disk["best_epoch"] == summary.best_epoch and on_disk["run_dir"] == str(tmp_path.resolve())
    assert read_summary(tmp_path) == TrainingSummary(**on_disk)
    text = summary.format()
    assert text.splitlines()[0] == "training finished after 2 epochs: trained the 2 configured epochs"
    assert f"best return     {summary.best_return:.4g} (mean evaluation episode return) in epoch " \
           f"{summary.best_epoch}" in text
    assert f"input_dir={tmp_path.resolve()}" in text


def test_early_stop_says_why(tmp_path: Path, tiny_cfg: Any) -> None:
    # Patience 1 stops at the first epoch without a new best, long before 40 epochs.
    summary = train_from_config(tiny_cfg("algorithm.n_epochs=40", "algorithm.patience=1"), run_dir=tmp_path)
    assert summary.stop_reason == "patience" and summary.epochs < 40
    assert summary.stopped_because.startswith(f"stopped early after epoch {summary.epochs - 1} of 40: no new "
                                              "best evaluation return for 1 epochs")
    assert summary.best_epoch is not None and summary.best_epoch < summary.epochs - 1


def test_selection_by_training_return_is_named(tmp_path: Path, tiny_cfg: Any) -> None:
    summary = train_from_config(tiny_cfg("algorithm.n_epochs=1", "algorithm.eval_repeats=0"),
                                run_dir=tmp_path)
    assert summary.selected_by == "train"
    assert "mean training episode return" in summary.format()


@pytest.mark.parametrize(("error", "reason"), [(KeyboardInterrupt, "interrupted"), (RuntimeError, "failed")])
def test_interrupted_or_failed_run_still_sums_up(tmp_path: Path, tiny_cfg: Any, error: type[BaseException],
                                                 reason: str) -> None:
    run = build_training(tiny_cfg("algorithm.n_epochs=3"), run_dir=tmp_path)

    def stop_when(trainer: Any) -> bool:
        if trainer.epoch == 1:
            raise error("stop")
        return False

    try:
        with pytest.raises(error):
            run.train(stop_when=stop_when)
    finally:
        run.close()
    summary = read_summary(tmp_path)
    assert summary.stop_reason == reason and summary.epochs == 1
    assert "resume=" in summary.format()
    if reason == "failed":
        assert summary.stopped_because == "failed during epoch 1: RuntimeError: stop"


def test_learning_curve_is_a_png_with_every_epoch(tmp_path: Path, tiny_cfg: Any) -> None:
    train_from_config(tiny_cfg("algorithm.n_epochs=3"), run_dir=tmp_path)
    image = (tmp_path / LEARNING_CURVE_FILE).read_bytes()
    assert image.startswith(PNG_MAGIC) and len(image) > 20_000
    curves = read_curves(tmp_path / "stats.tsv")
    for key in (("train", "episode_return", "mean"), ("eval", "episode_length", "mean"),
                ("learner", "policy_loss", "mean"), ("learner", "value_loss", "mean")):
        assert sorted(curves[key]) == [0, 1, 2], key
    assert not list(tmp_path.glob(".*.tmp.png"))


def test_learning_curve_without_statistics_still_draws(tmp_path: Path) -> None:
    assert plot_learning_curve(tmp_path).read_bytes().startswith(PNG_MAGIC)


def test_plotter_keeps_drawing_a_small_share_of_the_time(tmp_path: Path) -> None:
    plotter = LearningCurvePlotter(tmp_path, max_share=0.05, first_cost_s=0.05)
    assert plotter.epoch_done() is None  # right after the start: too soon
    plotter.last_end -= 10.0  # as if ten seconds had passed
    assert plotter.epoch_done() == tmp_path / LEARNING_CURVE_FILE
    assert plotter.epoch_done() is None
    assert plotter.finish() == tmp_path / LEARNING_CURVE_FILE  # the end of training always draws


@pytest.fixture
def restore_threads() -> Any:
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def test_torch_threads(tmp_path: Path, tiny_cfg: Any, restore_threads: Any) -> None:
    torch.set_num_threads(2)
    set_torch_threads(0)  # 0 keeps torch's setting
    assert torch.get_num_threads() == 2
    train_from_config(tiny_cfg("algorithm.n_epochs=1"), run_dir=tmp_path)  # conf_train: torch_threads 1
    assert torch.get_num_threads() == 1


@pytest.mark.parametrize("value", [-1, "two", 1.5, True])
def test_bad_torch_threads_names_the_key(value: Any) -> None:
    with pytest.raises(ConfigError, match=r"torch_threads: expected an integer >= 0"):
        set_torch_threads(value)


def test_tiny_epochs_are_not_redrawn_each_time(tmp_path: Path, tiny_cfg: Any,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    from maze_engine.training import plots

    drawn: list[int | None] = []
    original = plots.plot_learning_curve

    def counting(run_dir: Path, best_epoch: int | None = None, title: str | None = None) -> Path:
        drawn.append(best_epoch)
        return original(run_dir, best_epoch, title)

    monkeypatch.setattr(plots, "plot_learning_curve", counting)
    summary = train_from_config(tiny_cfg("algorithm.n_epochs=6"), run_dir=tmp_path)
    # Epochs of a fraction of a second would spend more time drawing than training: drawn at the end only.
    assert drawn == [summary.best_epoch]
