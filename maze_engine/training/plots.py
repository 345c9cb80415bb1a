"""The learning curve of a training run: ``learning_curve.png`` beside the TensorBoard events.

Four panels against the epoch: episode return and episode length (training episodes as a line with a band of
one standard deviation, evaluation episodes as points), the policy loss and the value loss (behavioural
cloning, which has no value loss: the validation loss). Drawn from
``stats.tsv`` with matplotlib's Agg canvas (no display, no pyplot state), so it works on headless machines
and shows every session of a resumed run.
"""

import math
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from maze_engine.core.stats.writers import read_stats_tsv

LEARNING_CURVE_FILE = "learning_curve.png"

Series = dict[int, float]
"""Epoch -> value."""

_PANELS = (("Episode return", "episode_return"), ("Episode length", "episode_length"))
_LOSSES = (("Policy loss", "policy_loss"), ("Value loss", "value_loss"))
_VALIDATION_LOSS = ("validation", "policy_loss", "mean")
"""Behavioural cloning's loss on held-out episodes, drawn where a value loss would be."""


def read_curves(stats_path: str | Path) -> dict[tuple[str, str, str], Series]:
    """``{(prefix, metric, stat): {epoch: value}}`` from a ``stats.tsv`` (the last row wins for an epoch)."""
    curves: dict[tuple[str, str, str], Series] = {}
    for row in read_stats_tsv(stats_path):
        try:
            epoch, value = int(row["epoch"]), float(row["value"])
        except (TypeError, ValueError):
            continue
        if math.isfinite(value):
            curves.setdefault((row["prefix"], row["metric"], row["stat"]), {})[epoch] = value
    return curves


def plot_learning_curve(run_dir: str | Path, best_epoch: int | None = None, title: str | None = None) -> Path:
    """Draw ``<run_dir>/learning_curve.png`` from ``<run_dir>/stats.tsv``; returns the PNG's path.

    ``best_epoch`` (the epoch whose weights were saved) is marked on the return panel.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    directory = Path(run_dir)
    stats_path = directory / "stats.tsv"
    curves = read_curves(stats_path) if stats_path.is_file() else {}
    figure = Figure(figsize=(11, 7.5), dpi=90, layout="constrained")
    axes = figure.subplots(2, 2, sharex=True)
    for axis, (label, metric) in zip(axes[0], _PANELS, strict=True):
        _draw_episode_metric(axis, curves, metric, label)
    for axis, (label, metric) in zip(axes[1], _LOSSES, strict=True):
        series = ("learner", metric, "mean")
        if metric == "value_loss" and series not in curves and _VALIDATION_LOSS in curves:
            label, series = "Validation loss", _VALIDATION_LOSS
        _draw_line(axis, curves.get(series, {}), label, color="tab:purple")
        axis.set_xlabel("epoch")
        if series[1] == "value_loss" and all(value > 0 for value in curves.get(series, {}).values()):
            axis.set_yscale("log")
    if best_epoch is not None:
        for source in ("eval", "train"):
            value = curves.get((source, "episode_return", "mean"), {}).get(best_epoch)
            if value is not None:
                axes[0][0].plot([best_epoch], [value], marker="*", markersize=16, color="gold",
                                markeredgecolor="black", linestyle="none", label=f"best (epoch {best_epoch})",
                                zorder=5)
                axes[0][0].legend(loc="best", fontsize="small")
                break
    for axis in axes.flat:
        axis.xaxis.set_major_locator(MaxNLocator(integer=True))
        axis.grid(True, alpha=0.3)
    figure.suptitle(title or directory.name, fontsize="medium")
    target = directory / LEARNING_CURVE_FILE
    temporary = target.with_name(f".{target.stem}.{os.getpid()}.tmp.png")
    FigureCanvasAgg(figure).print_png(str(temporary))
    os.replace(temporary, target)
    return target


class LearningCurvePlotter:
    """Redraws a run's learning curve after epochs, keeping the drawing under ``max_share`` of the time.

    Drawing takes a fraction of a second; an epoch of a small env can take less. ``epoch_done`` redraws only
    once the time since the last drawing is ``1 / max_share`` times what drawing took (``finish`` always
    redraws), so short epochs are not slowed down and long ones are drawn after every epoch.
    """

    def __init__(self, run_dir: str | Path, max_share: float = 0.05, first_cost_s: float = 0.5) -> None:
        self.run_dir = Path(run_dir)
        self.max_share = max_share
        self.cost_s = first_cost_s
        self.last_end = time.perf_counter()
        self.path: Path | None = None

    def epoch_done(self, best_epoch: int | None = None, title: str | None = None) -> Path | None:
        """Redraw if it is time to; returns the PNG's path when drawn."""
        if time.perf_counter() - self.last_end < self.cost_s / self.max_share:
            return None
        return self.finish(best_epoch, title)

    def finish(self, best_epoch: int | None = None, title: str | None = None) -> Path:
        """Redraw now."""
        started = time.perf_counter()
        self.path = plot_learning_curve(self.run_dir, best_epoch, title)
        self.last_end = time.perf_counter()
        self.cost_s = self.last_end - started
        return self.path


def _draw_episode_metric(axis: Any, curves: dict[tuple[str, str, str], Series], metric: str,
                         label: str) -> None:
    train = curves.get(("train", metric, "mean"), {})
    if train:
        epochs = sorted(train)
        means = [train[epoch] for epoch in epochs]
        stds = [curves.get(("train", metric, "std"), {}).get(epoch, 0.0) for epoch in epochs]
        axis.plot(epochs, means, color="tab:blue", label="training episodes (mean)")
        axis.fill_between(epochs, [m - s for m, s in zip(means, stds, strict=True)],
                          [m + s for m, s in zip(means, stds, strict=True)], color="tab:blue", alpha=0.15,
                          linewidth=0)
    evaluation = curves.get(("eval", metric, "mean"), {})
    if evaluation:
        epochs = sorted(evaluation)
        axis.plot(epochs, [evaluation[epoch] for epoch in epochs], color="tab:orange", marker="o",
                  markersize=4, label="evaluation episodes (mean)")
    axis.set_title(label)
    if train or evaluation:
        axis.legend(loc="best", fontsize="small")
    else:
        _no_data(axis)


def _draw_line(axis: Any, series: Series, label: str, color: str) -> None:
    axis.set_title(label)
    if not series:
        _no_data(axis)
        return
    epochs: Sequence[int] = sorted(series)
    axis.plot(epochs, [series[epoch] for epoch in epochs], color=color,
              marker="." if len(epochs) < 30 else None)


def _no_data(axis: Any) -> None:
    axis.text(0.5, 0.5, "no data yet", transform=axis.transAxes, ha="center", va="center", color="gray")
