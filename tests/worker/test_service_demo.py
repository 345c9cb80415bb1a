"""The demo behind ``make demo``: the whole product end to end against the broker (slow), the quick
``--serve-only`` demo, the table and the picture, and its advice when there is no broker."""

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from worker import demo
from worker.demo_production import FinishedEpisode, Production
from worker.demo_report import plot_returns

ROOT = Path(__file__).resolve().parents[2]
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def test_without_a_broker_the_demo_says_how_to_start_one(capsys: pytest.CaptureFixture[str]) -> None:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    assert demo.main(["--url", f"amqp://guest:secret@127.0.0.1:{port}/%2F"]) == 1
    advice = capsys.readouterr().err
    for line in ("docker compose -f deploy/docker-compose.yml up rabbitmq", "rabbitmq-server -detached",
                 "rabbitmq-plugins enable rabbitmq_consistent_hash_exchange", "MAZE_AMQP_URL",
                 "apt-get install rabbitmq-server", "start Docker"):
        assert line in advice
    assert "secret" not in advice


def test_help_lists_the_demo_flags() -> None:
    result = subprocess.run([sys.executable, "-m", "worker.demo", "--help"], cwd=ROOT, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0
    for flag in ("--producer-only", "--serve-only", "--episodes", "--seconds", "--output",
                 "--after-episodes"):
        assert flag in result.stdout


class NoClient:
    """The table and the picture need no broker."""

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"no client call expected, got {name}")


def test_the_table_has_one_row_per_version_and_the_picture_is_a_png(tmp_path: Path) -> None:
    production = Production(NoClient())  # type: ignore[arg-type]
    production.first_served.update({1: 0.0, 2: 12.5})
    production.finished.extend([FinishedEpisode(1.0, 1, 20.0), FinishedEpisode(2.0, 1, 30.0),
                                FinishedEpisode(14.0, 2, 500.0)])
    rows = production.table().splitlines()
    assert rows[0].split("|")[0].strip() == "policy version" and len(rows) == 4
    assert [cell.strip() for cell in rows[2].split("|")] == ["1", "2", "25.0", "20", "30", "0.0 s"]
    assert [cell.strip() for cell in rows[3].split("|")] == ["2", "1", "500.0", "500", "500", "12.5 s"]
    picture = plot_returns(production.finished, {"training job submitted": 5.0}, tmp_path / "out" / "r.png")
    assert picture.read_bytes().startswith(PNG_SIGNATURE)


@pytest.mark.integration
def test_the_quick_demo_plays_episodes_and_stops_the_worker_cleanly(amqp_url: str) -> None:
    result = subprocess.run([sys.executable, "-m", "worker.demo", "--serve-only", "--url", amqp_url,
                             "--seconds", "2", "--episodes", "4", "--", "broker.shards=4"],
                            cwd=ROOT, capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "episodes finished:" in out and "actions/s" in out and "error replies: none" in out
    assert "[worker]" in out and "final statistics" in out
    assert "maze-worker stopped cleanly (exit code 0)" in out
    finished = int(out.split("episodes finished: ")[1].split()[0])
    assert finished >= 4


def _rows(table: str) -> dict[int, list[str]]:
    """Version -> the cells of its row, from a printed returns table."""
    rows = {}
    for line in table.splitlines():
        cells = [cell.strip() for cell in line.split("|")]
        if len(cells) == 6 and cells[0].isdigit():
            rows[int(cells[0])] = cells
    return rows


@pytest.mark.slow
@pytest.mark.integration
def test_the_demo_trains_publishes_and_the_fleet_hot_reloads(amqp_url: str, tmp_path: Path) -> None:
    """``make demo`` for real: version 1 fresh, a PPO job publishes version 2 (mean return >= 400 with the
    full 500-step limit), the agent worker reloads it, a PNG, clean stops, all within two minutes."""
    result = subprocess.run([sys.executable, "-m", "worker.demo", "--url", amqp_url, "--output",
                             str(tmp_path)], cwd=ROOT, capture_output=True, text=True, timeout=300)
    out = result.stdout
    assert result.returncode == 0, out[-6000:] + result.stderr[-3000:]
    before = out.split("returns per policy version, before the training")[1].split("==")[0]
    after = out.split("returns per policy version, after the reload")[1].split("==")[0]
    assert list(_rows(before)) == [1] and list(_rows(after)) == [1, 2]
    assert float(_rows(before)[1][2]) < 100 and float(_rows(after)[2][2]) >= 400
    assert int(_rows(after)[2][1]) >= 32
    assert "published version 2: this run's best evaluation return" in out
    assert re.search(r"epoch 20/20: evaluation return", out)
    assert "policy 'cartpole' version 2 (published" in out and "loaded: new episodes get it" in out
    assert "serving policy 'cartpole' version 1" in out
    assert "both workers stopped cleanly (exit code 0)" in out
    assert (tmp_path / "returns.png").read_bytes().startswith(PNG_SIGNATURE)
    assert f"coloured by policy version: {tmp_path / 'returns.png'}" in out
    total = float(re.search(r"^\s+total\s+([\d.]+) s$", out, re.MULTILINE).group(1))  # type: ignore[union-attr]
    assert total < 120, f"the demo took {total:.0f} s"
