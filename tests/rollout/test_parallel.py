"""ParallelRolloutRunner: exact statistics merge, episode split, seeding, failing workers."""

import time
from pathlib import Path
from typing import Any

import pytest
from rollout_helpers import make_endless_env

from maze_engine import ConfigError, ParallelRolloutRunner, SequentialRolloutRunner
from maze_engine.rollout.parallel import RolloutWorkerError
from maze_engine.rollout.runner import merge_aggregates, summarize

CARTPOLE = {"_target_": "maze_engine.make_gym_maze_env", "name": "CartPole-v1"}
RANDOM = {"_target_": "maze_engine.RandomPolicy"}
ENDLESS = {"_target_": "rollout_helpers.make_endless_env"}


def parallel(**kwargs: Any) -> ParallelRolloutRunner:
    return ParallelRolloutRunner(**{"silent": True, "n_processes": 2, **kwargs})


def test_statistics_equal_the_exact_merge_of_each_workers_episodes(tmp_path: Path) -> None:
    runner = parallel(n_episodes=7, max_episode_steps=30, seed=21)
    stats = runner.run(CARTPOLE, RANDOM, output_dir=tmp_path / "parallel")
    # Replay each worker's share in this process with the worker's seed, then merge the same way.
    parts = []
    for share, seed in zip(runner.episode_shares(), runner.worker_seeds() or [], strict=True):
        worker = SequentialRolloutRunner(n_episodes=share, max_episode_steps=30, seed=seed, silent=True)
        parts.append(worker.collect(CARTPOLE, None, RANDOM, tmp_path / "replay"))
    assert stats == summarize(merge_aggregates(parts))
    assert stats["episode_length"]["count"] == 7
    assert stats["step_reward"]["count"] == pytest.approx(stats["episode_length"]["mean"] * 7)


def test_counts_with_step_limits(tmp_path: Path) -> None:
    stats = parallel(n_episodes=9, max_episode_steps=4, seed=0).run(ENDLESS, RANDOM, output_dir=tmp_path)
    assert stats["episode_length"] == {"mean": 4.0, "std": 0.0, "min": 4, "max": 4, "count": 9}
    assert stats["step_reward"]["count"] == 36
    # Rewards are the random actions 0, 1 or 2.
    assert 0 <= stats["step_reward"]["min"] <= stats["step_reward"]["max"] <= 2


def test_same_seed_same_statistics(tmp_path: Path) -> None:
    runner = parallel(n_episodes=6, max_episode_steps=10, seed=8)
    first = runner.run(ENDLESS, RANDOM, output_dir=tmp_path)
    assert runner.run(ENDLESS, RANDOM, output_dir=tmp_path) == first


def test_unseeded_workers_play_different_episodes(tmp_path: Path) -> None:
    stats = parallel(n_episodes=2, max_episode_steps=200).run(ENDLESS, RANDOM, output_dir=tmp_path)
    # Two workers with the same seed would produce identical returns (std 0); 200 random steps never do.
    assert stats["episode_return"]["std"] > 0


@pytest.mark.parametrize(("n_episodes", "n_processes", "cpus", "shares"), [
    (10, 3, 8, [4, 3, 3]),
    (2, 5, 8, [1, 1]),
    (100, 3, 2, [50, 50]),
    (1, 1, 1, [1]),
])
def test_episode_shares(monkeypatch: pytest.MonkeyPatch, n_episodes: int, n_processes: int, cpus: int,
                        shares: list[int]) -> None:
    monkeypatch.setattr("os.cpu_count", lambda: cpus)
    runner = ParallelRolloutRunner(n_episodes=n_episodes, n_processes=n_processes)
    assert runner.episode_shares() == shares
    assert len(runner.worker_seeds() or []) == 0  # unseeded
    assert len(ParallelRolloutRunner(n_episodes=n_episodes, n_processes=n_processes, seed=1).worker_seeds()
               or []) == len(shares)


def test_rerun_prints_one_table_per_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    runner = ParallelRolloutRunner(n_episodes=4, n_processes=2, max_episode_steps=3, seed=1)
    for _ in range(2):
        runner.run(ENDLESS, RANDOM, output_dir=tmp_path)
        captured = capsys.readouterr()
        assert captured.out.count("rollout statistics") == 1
        assert "4/4" in captured.err  # the progress bar reached every episode


def test_unpicklable_env_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="env: the parallel runner sends it to worker processes"):
        parallel(n_episodes=2).run(lambda: make_endless_env(), RANDOM, output_dir=tmp_path)


def test_bad_config_fails_before_workers_start(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="env.name"):
        parallel(n_episodes=2).run({**CARTPOLE, "name": "NoSuchEnv-v0"}, RANDOM, output_dir=tmp_path)


def test_crashed_worker_is_reported_not_awaited(tmp_path: Path) -> None:
    start = time.monotonic()
    with pytest.raises(RolloutWorkerError, match=r"rollout worker \d \(pid \d+\) exited with code 3"):
        parallel(n_episodes=4, max_episode_steps=5).run(
            ENDLESS, {"_target_": "rollout_helpers.CrashingPolicy"}, output_dir=tmp_path)
    assert time.monotonic() - start < 30


def test_worker_exception_carries_the_worker_traceback(tmp_path: Path) -> None:
    with pytest.raises(RolloutWorkerError, match="ValueError: policy exploded") as info:
        parallel(n_episodes=2, max_episode_steps=5).run(
            ENDLESS, {"_target_": "rollout_helpers.RaisingPolicy"}, output_dir=tmp_path)
    assert "worker traceback" in str(info.value)
    assert "rollout_helpers.py" in str(info.value)


def test_worker_config_error_keeps_its_type(tmp_path: Path) -> None:
    policy = {"_target_": "rollout_helpers.RaisingPolicy", "error": "config"}
    with pytest.raises(ConfigError, match="policy.threshold"):
        parallel(n_episodes=2, max_episode_steps=5).run(ENDLESS, policy, output_dir=tmp_path)


def test_bad_n_processes_names_the_field() -> None:
    with pytest.raises(ConfigError, match="runner.n_processes"):
        ParallelRolloutRunner(n_processes=0)
