"""Where a training run's statistics go: ``stats.tsv``, TensorBoard events, a console table, a progress bar.

Statistics arrive per epoch in sections keyed by prefix; the metric names are fixed (docs/training.md):

- ``train``: ``episode_return``, ``episode_length``, ``step_reward`` of the training envs;
- ``eval``: the same for the evaluation episodes after the epoch;
- ``learner``: ``policy_loss``, ``value_loss``, ``entropy``, ``grad_norm``, ``learning_rate`` (PPO adds
  ``approx_kl`` and ``clip_fraction``), aggregated over the epoch's updates;
- ``time``: ``steps_per_second``, ``epoch_seconds``, ``total_env_steps``.

Each metric carries ``mean``, ``std``, ``min``, ``max`` and ``count``. In TensorBoard a value is tagged
``<prefix>/<metric>/<stat>`` (``train/episode_return/mean``) with the epoch as step; ``stats.tsv`` has one row
per value (columns epoch, prefix, metric, stat, value).
"""

import csv
import logging
import math
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import IO, Any

from maze_engine.core.stats.writers import ConsoleStatsWriter, Stats, StatsWriter, TSVStatsWriter

logger = logging.getLogger(__name__)

SECTIONS = ("train", "eval", "learner", "time")
"""The prefixes, in the order the console table lists them."""
STATS_FILE = "stats.tsv"


def drop_epochs_from(path: Path, first_epoch: int) -> None:
    """Remove the rows of epochs ``>= first_epoch`` from a ``stats.tsv`` (rewritten atomically).

    A resumed run trains those epochs again: rows a crash left behind after the last checkpoint must not
    appear twice.
    """
    if not path.is_file():
        return
    with path.open(encoding="utf-8", newline="") as file:
        rows = list(csv.reader(file, delimiter="\t"))
    kept = [row for row in rows[1:] if row and row[0].isdigit() and int(row[0]) < first_epoch]
    if len(kept) == len(rows) - 1:
        return
    temporary = path.with_name(f".{path.name}.tmp")
    with temporary.open("w", encoding="utf-8", newline="") as file:
        writer = csv.writer(file, delimiter="\t", lineterminator="\n")
        writer.writerows([rows[0], *kept] if rows else [])
    os.replace(temporary, path)


class TensorBoardStatsWriter(StatsWriter):
    """Writes every statistic as a scalar tagged ``<prefix>/<metric>/<stat>`` into ``log_dir``."""

    def __init__(self, log_dir: str | Path, purge_step: int | None = None) -> None:
        from torch.utils.tensorboard import SummaryWriter

        # purge_step hides events of earlier files at or after that step: a resumed run's epochs replace them.
        self.writer = SummaryWriter(log_dir=str(log_dir), purge_step=purge_step)

    def write(self, stats: Stats, epoch: int, prefix: str) -> None:
        for metric, values in stats.items():
            for stat, value in values.items():
                if value is not None and math.isfinite(float(value)):
                    self.writer.add_scalar(f"{prefix}/{metric}/{stat}", float(value), global_step=epoch)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


class TrainingReporter:
    """Publishes epoch statistics to the run directory (TSV, TensorBoard), the log and, unless silent, the
    console.

    ``first_epoch`` > 0 continues a run: statistics of that epoch and later, left by an interrupted session,
    are dropped from ``stats.tsv`` and hidden in TensorBoard, so every epoch appears once.
    """

    def __init__(self, run_dir: str | Path | None = None, silent: bool = False, tensorboard: bool = True,
                 stream: IO[str] | None = None, first_epoch: int = 0) -> None:
        self.silent = silent
        self.stream = stream
        self.file_writers: list[StatsWriter] = []
        if run_dir is not None:
            run_dir = Path(run_dir)
            if first_epoch > 0:
                drop_epochs_from(run_dir / STATS_FILE, first_epoch)
            self.file_writers.append(TSVStatsWriter(run_dir / STATS_FILE))
            if tensorboard:
                self.file_writers.append(TensorBoardStatsWriter(run_dir, first_epoch or None))
        self.console = None if silent else ConsoleStatsWriter(stream)

    def write_epoch(self, epoch: int, sections: Mapping[str, Stats]) -> None:
        """Publish every section of one epoch."""
        for prefix, stats in sections.items():
            for writer in self.file_writers:
                writer.write(stats, epoch, prefix)
        logger.info("epoch %d: %s", epoch, epoch_line(sections))
        if self.console is not None:
            # One table per epoch: rows are ``<prefix>/<metric>``.
            combined = {f"{prefix}/{metric}": values for prefix, stats in sections.items()
                        for metric, values in stats.items()}
            self.console.write(combined, epoch, "training")

    def progress(self, total: int, epoch: int) -> Any:
        """A progress bar over the ``total`` updates of one epoch (a no-op object when silent)."""
        if self.silent:
            return _NoProgress()
        from tqdm import tqdm

        return tqdm(total=total, desc=f"epoch {epoch}", unit="update", leave=False,
                    file=self.stream or sys.stderr, dynamic_ncols=True)

    def close(self) -> None:
        for writer in self.file_writers:
            writer.close()
        self.file_writers = []


def epoch_line(sections: Mapping[str, Stats]) -> str:
    """One line for the log: the returns, the losses and the speed of an epoch."""
    parts = []
    for prefix, metric, label in (("train", "episode_return", "train return"),
                                  ("eval", "episode_return", "eval return"),
                                  ("learner", "policy_loss", "policy loss"),
                                  ("learner", "value_loss", "value loss"),
                                  ("time", "steps_per_second", "steps/s")):
        value = sections.get(prefix, {}).get(metric, {}).get("mean")
        if value is not None and math.isfinite(float(value)):
            parts.append(f"{label} {float(value):.4g}")
    return ", ".join(parts) or "no statistics"


class _NoProgress:
    """Stands in for a tqdm bar when output is off."""

    def update(self, n: int = 1) -> None:
        pass

    def set_postfix(self, *args: Any, **kwargs: Any) -> None:
        pass

    def close(self) -> None:
        pass
