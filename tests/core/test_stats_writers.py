"""Statistics writers: console table, TSV rows read back, and the scoped writer registry."""

import io
import math

from maze_engine import ConsoleStatsWriter, StatsWriter, TSVStatsWriter, stats_writers
from maze_engine.core.stats.writers import read_stats_tsv, registered_stats_writers, write_stats

STATS = {
    "episode_return": {"mean": 21.5, "std": 3.14159, "min": 10.0, "max": 30, "count": 4},
    "step_reward": {"mean": math.nan, "std": math.nan, "min": math.nan, "max": math.nan, "count": 0},
}


class RecordingWriter(StatsWriter):
    def __init__(self) -> None:
        self.calls: list[tuple[int, str]] = []
        self.closed = False

    def write(self, stats, epoch, prefix):
        self.calls.append((epoch, prefix))

    def close(self):
        self.closed = True


def test_console_table():
    stream = io.StringIO()
    ConsoleStatsWriter(stream).write(STATS, 2, "rollout")
    rule = "-" * 69
    assert stream.getvalue().splitlines() == [
        "rollout statistics, epoch 2",
        rule,
        "metric               mean        std        min        max      count",
        rule,
        "episode_return       21.5      3.142         10         30          4",
        "step_reward             -          -          -          -          0",
        rule,
    ]


def test_tsv_rows_and_header_once(tmp_path):
    path = tmp_path / "logs" / "stats.tsv"
    writer = TSVStatsWriter(path)
    writer.write(STATS, 0, "train")
    writer.close()
    writer = TSVStatsWriter(path)  # reopening appends without a second header
    writer.write({"episode_length": {"mean": 9.5, "count": 2}}, 1, "eval")
    writer.close()
    lines = path.read_text().splitlines()
    assert lines[0] == "epoch\tprefix\tmetric\tstat\tvalue"
    assert lines.count(lines[0]) == 1
    rows = read_stats_tsv(path)
    assert len(rows) == 2 * 5 + 2
    assert rows[0] == {"epoch": "0", "prefix": "train", "metric": "episode_return", "stat": "mean",
                       "value": "21.5"}
    assert rows[1]["value"] == "3.14159" and rows[5]["metric"] == "step_reward"
    assert math.isnan(float(rows[6]["value"]))
    assert rows[-1] == {"epoch": "1", "prefix": "eval", "metric": "episode_length", "stat": "count",
                        "value": "2"}


def test_registry_is_scoped_and_closes_writers():
    first, second = RecordingWriter(), RecordingWriter()
    before = registered_stats_writers()
    with stats_writers(first, second):
        assert registered_stats_writers() == (*before, first, second)
        write_stats(STATS, 3, "eval")
    write_stats(STATS, 4, "eval")  # after the block: nobody listens
    assert first.calls == second.calls == [(3, "eval")]
    assert first.closed and second.closed
    assert registered_stats_writers() == before


def test_registry_unregisters_on_error():
    writer = RecordingWriter()
    try:
        with stats_writers(writer):
            raise RuntimeError("rollout failed")
    except RuntimeError:
        pass
    assert writer not in registered_stats_writers() and writer.closed
