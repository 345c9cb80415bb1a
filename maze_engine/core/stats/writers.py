"""Writers that publish epoch statistics, and the registry that LogStatsWrapper writes through.

Statistics are a nested mapping ``{metric name: {stat name: value}}`` such as
``{"episode_return": {"mean": 21.3, "std": 4.0, ...}}``. Writers are registered for a scope (a rollout, a
training run) with ``stats_writers(...)`` so that running a second rollout in the same process does not
write through the first one's writers.
"""

import csv
import math
import sys
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import IO

from maze_engine.core.stats.running import STAT_NAMES

Stats = Mapping[str, Mapping[str, float]]


class StatsWriter(ABC):
    """Receives the statistics of one epoch under a prefix (``train``, ``eval``, ``rollout``...)."""

    @abstractmethod
    def write(self, stats: Stats, epoch: int, prefix: str) -> None:
        """Publish ``stats`` for ``epoch``."""

    def close(self) -> None:
        """Flush and release files."""


def _format(value: float) -> str:
    if isinstance(value, float) and math.isnan(value):
        return "-"
    if isinstance(value, int) or float(value).is_integer():
        return f"{int(value):d}"
    return f"{value:.4g}"


class ConsoleStatsWriter(StatsWriter):
    """Prints a readable table: one row per metric, one column per statistic."""

    def __init__(self, stream: IO[str] | None = None) -> None:
        self.stream = stream

    def write(self, stats: Stats, epoch: int, prefix: str) -> None:
        stream = self.stream or sys.stdout
        name_width = max([len(name) for name in stats] + [len("metric")])
        header = f"{'metric':<{name_width}} " + " ".join(f"{name:>10}" for name in STAT_NAMES)
        rule = "-" * len(header)
        lines = [f"{prefix} statistics, epoch {epoch}", rule, header, rule]
        for name, values in stats.items():
            cells = " ".join(f"{_format(values.get(stat, math.nan)):>10}" for stat in STAT_NAMES)
            lines.append(f"{name:<{name_width}} {cells}")
        lines.append(rule)
        print("\n".join(lines), file=stream, flush=True)


class TSVStatsWriter(StatsWriter):
    """Appends rows ``epoch, prefix, metric, stat, value`` to a tab-separated file (header written once)."""

    COLUMNS = ("epoch", "prefix", "metric", "stat", "value")

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        is_new = not self.path.exists() or self.path.stat().st_size == 0
        self._file = self.path.open("a", newline="", encoding="utf-8")
        self._writer = csv.writer(self._file, delimiter="\t", lineterminator="\n")
        if is_new:
            self._writer.writerow(self.COLUMNS)

    def write(self, stats: Stats, epoch: int, prefix: str) -> None:
        for name, values in stats.items():
            for stat, value in values.items():
                self._writer.writerow((epoch, prefix, name, stat, value))
        self._file.flush()

    def close(self) -> None:
        self._file.close()


def read_stats_tsv(path: str | Path) -> list[dict[str, str]]:
    """Read back a file written by TSVStatsWriter as a list of row dicts."""
    with Path(path).open(encoding="utf-8", newline="") as file:
        return list(csv.DictReader(file, delimiter="\t"))


_registered: list[StatsWriter] = []


def register_stats_writer(writer: StatsWriter) -> None:
    """Add ``writer`` to the writers every LogStatsWrapper publishes to."""
    _registered.append(writer)


def unregister_stats_writer(writer: StatsWriter) -> None:
    """Remove ``writer`` (closing it is the caller's choice)."""
    if writer in _registered:
        _registered.remove(writer)


def registered_stats_writers() -> tuple[StatsWriter, ...]:
    """The writers currently registered."""
    return tuple(_registered)


@contextmanager
def stats_writers(*writers: StatsWriter) -> Iterator[None]:
    """Register ``writers`` for the duration of a block, then unregister and close them."""
    for writer in writers:
        register_stats_writer(writer)
    try:
        yield
    finally:
        for writer in writers:
            unregister_stats_writer(writer)
            writer.close()


def write_stats(stats: Stats, epoch: int, prefix: str) -> None:
    """Publish ``stats`` to every registered writer."""
    for writer in _registered:
        writer.write(stats, epoch, prefix)
