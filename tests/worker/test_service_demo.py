"""The demo behind ``make demo``: end to end against the broker, and its advice when there is none."""

import subprocess
import sys
from pathlib import Path

import pytest

from worker import demo

ROOT = Path(__file__).resolve().parents[2]


def test_without_a_broker_the_demo_says_how_to_start_one(capsys: pytest.CaptureFixture[str]) -> None:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    assert demo.main(["--url", f"amqp://guest:secret@127.0.0.1:{port}/%2F"]) == 1
    advice = capsys.readouterr().err
    for line in ("docker compose -f deploy/docker-compose.yml up rabbitmq", "rabbitmq-server -detached",
                 "rabbitmq-plugins enable rabbitmq_consistent_hash_exchange", "MAZE_AMQP_URL"):
        assert line in advice
    assert "secret" not in advice


def test_help_lists_the_producer_flags() -> None:
    result = subprocess.run([sys.executable, "-m", "worker.demo", "--help"], cwd=ROOT, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0 and "--producer-only" in result.stdout and "--episodes" in result.stdout


@pytest.mark.integration
def test_the_demo_plays_episodes_and_stops_the_worker_cleanly(amqp_url: str) -> None:
    result = subprocess.run([sys.executable, "-m", "worker.demo", "--url", amqp_url, "--seconds", "2",
                             "--episodes", "4", "--", "broker.shards=4"],
                            cwd=ROOT, capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "episodes finished:" in out and "actions/s" in out and "error replies: none" in out
    assert "[worker]" in out and "final statistics" in out
    assert "maze-worker stopped cleanly (exit code 0)" in out
    finished = int(out.split("episodes finished: ")[1].split()[0])
    assert finished >= 4
