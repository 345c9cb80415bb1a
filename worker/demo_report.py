"""The demo's picture: episode return over time, one colour per policy version, with the moments that matter
(training submitted, a version published, the fleet serving it) as vertical lines."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from worker.demo_production import FinishedEpisode


def plot_returns(finished: Sequence[FinishedEpisode], marks: Mapping[str, float], path: Path,
                 title: str = "CartPole-v1 episode returns served by maze-worker") -> Path:
    """Write a PNG of ``finished`` (return against finishing time, coloured by version) to ``path``."""
    import matplotlib

    matplotlib.use("Agg")  # no display needed, nothing opens a window
    from matplotlib import pyplot

    figure, axes = pyplot.subplots(figsize=(9, 4.5), dpi=110)
    try:
        versions = sorted({done.version for done in finished}, key=lambda value: value or 0)
        for index, version in enumerate(versions):
            points = [done for done in finished if done.version == version]
            axes.scatter([done.finished_at for done in points], [done.episode_return for done in points],
                         s=14, color=f"C{index}", label="not a published policy" if version is None
                         else f"policy version {version}")
        for index, (label, at) in enumerate(marks.items()):
            axes.axvline(at, color="0.4", linestyle=("--", ":", "-.")[index % 3], linewidth=1, label=label)
        axes.set_xlabel("seconds since the production system started (episode end)")
        axes.set_ylabel("episode return")
        axes.set_title(title)
        axes.set_ylim(bottom=0)
        axes.grid(alpha=0.3)
        axes.legend(loc="upper left", fontsize="small")
        figure.tight_layout()
        path.parent.mkdir(parents=True, exist_ok=True)
        figure.savefig(path)
    finally:
        pyplot.close(figure)
    return path
