"""The engine demo (``make demo-engine``) runs quickly and prints the statistics of both parts."""

import re
import time

import pytest

from maze_engine.examples import engine_demo


def test_engine_demo_prints_rollout_and_deployment_statistics(capsys: pytest.CaptureFixture[str]) -> None:
    start = time.monotonic()
    engine_demo.main()
    elapsed = time.monotonic() - start
    out = capsys.readouterr().out
    assert "rollout statistics" in out and "deployment statistics" in out
    assert "20 trajectories" in out
    episodes = re.findall(r"episode (\d): return (\d+), length (\d+)", out)
    assert [int(index) for index, _, _ in episodes] == [0, 1, 2]
    # CartPole pays 1 per step, so each episode's return equals its length.
    assert all(ret == length for _, ret, length in episodes)
    assert elapsed < 20
