"""Runners write trajectories (and event logs) under the output directory, readable back after the run."""

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from maze_engine import (
    ConfigError,
    ParallelRolloutRunner,
    SequentialRolloutRunner,
    read_event_logs,
    read_trajectories,
)
from maze_engine.rollout.runner import (
    EVENT_LOG_DIR,
    MINARI_DIR,
    MINARI_PARTS_DIR,
    TRAJECTORY_DIR,
    RolloutRunner,
)

ENDLESS = {"_target_": "rollout_helpers.make_endless_env"}
EVENTFUL = {"_target_": "rollout_helpers.make_eventful_env"}
CARTPOLE = {"_target_": "maze_engine.make_gym_maze_env", "name": "CartPole-v1"}
RANDOM = {"_target_": "maze_engine.RandomPolicy"}


def make_runner(kind: str, **kwargs: Any) -> RolloutRunner:
    if kind == "parallel":
        return ParallelRolloutRunner(n_processes=2, silent=True, **kwargs)
    return SequentialRolloutRunner(silent=True, **kwargs)


@pytest.mark.parametrize("kind", ["sequential", "parallel"])
def test_trajectories_are_written_and_read_back(tmp_path: Path, kind: str) -> None:
    runner = make_runner(kind, n_episodes=5, max_episode_steps=6, seed=3, record_trajectory=True)
    stats = runner.run(ENDLESS, RANDOM, output_dir=tmp_path)
    trajectories = list(read_trajectories(tmp_path / TRAJECTORY_DIR))
    assert len(trajectories) == 5
    assert len({trajectory.episode_id for trajectory in trajectories}) == 5
    for trajectory in trajectories:
        assert len(trajectory) == 6
        assert trajectory.complete
        assert trajectory.truncated[-1] and not trajectory.truncated[:-1].any()
        # EndlessEnv observes the step count and pays the action taken.
        np.testing.assert_array_equal(trajectory.observations["observation"][:, 0], np.arange(6))
        np.testing.assert_array_equal(trajectory.rewards, trajectory.actions["action"])
    recorded_return = sum(float(trajectory.rewards.sum()) for trajectory in trajectories)
    assert recorded_return == pytest.approx(stats["episode_return"]["mean"] * 5)
    assert not (tmp_path / EVENT_LOG_DIR).exists()


def test_nothing_is_recorded_unless_asked(tmp_path: Path) -> None:
    make_runner("sequential", n_episodes=2, max_episode_steps=3).run(ENDLESS, RANDOM, output_dir=tmp_path)
    assert sorted(path.name for path in tmp_path.iterdir()) == ["stats.tsv"]


def test_cartpole_trajectories_end_with_done(tmp_path: Path) -> None:
    runner = make_runner("sequential", n_episodes=3, max_episode_steps=500, seed=1, record_trajectory=True)
    stats = runner.run(CARTPOLE, RANDOM, output_dir=tmp_path)
    lengths = sorted(len(trajectory) for trajectory in read_trajectories(tmp_path / TRAJECTORY_DIR))
    assert sum(lengths) == stats["step_reward"]["count"]
    assert all(trajectory.dones[-1] and trajectory.terminated[-1]
               for trajectory in read_trajectories(tmp_path / TRAJECTORY_DIR))


@pytest.mark.parametrize("kind", ["sequential", "parallel"])
def test_event_logs_share_episode_ids_with_trajectories(tmp_path: Path, kind: str) -> None:
    runner = make_runner(kind, n_episodes=4, max_episode_steps=5, seed=9, record_trajectory=True,
                         record_event_logs=True)
    runner.run(EVENTFUL, RANDOM, output_dir=tmp_path)
    rows = read_event_logs(tmp_path / EVENT_LOG_DIR)["action_taken"]
    assert len(rows) == 4 * 5
    trajectories = {trajectory.episode_id: trajectory
                    for trajectory in read_trajectories(tmp_path / TRAJECTORY_DIR)}
    assert {row["episode_id"] for row in rows} == set(trajectories)
    for row in rows:
        trajectory = trajectories[row["episode_id"]]
        assert row["action"] == trajectory.actions["action"][row["step"]]
        assert row["reward"] == trajectory.rewards[row["step"]]


def test_recording_with_a_reused_env_instance(tmp_path: Path) -> None:
    from rollout_helpers import make_eventful_env

    env = make_eventful_env()
    runner = make_runner("sequential", n_episodes=2, max_episode_steps=3, record_trajectory=True,
                         record_event_logs=True)
    for run in ("first", "second"):
        runner.run_with(env=env, wrappers=None, agent=RANDOM, output_dir=tmp_path / run)
    for run in ("first", "second"):
        assert len(read_event_logs(tmp_path / run / EVENT_LOG_DIR)["action_taken"]) == 6
        assert len(list(read_trajectories(tmp_path / run / TRAJECTORY_DIR))) == 2


@pytest.mark.parametrize("kind", ["sequential", "parallel"])
def test_record_minari_writes_one_dataset_that_minari_loads(tmp_path: Path, kind: str,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    import minari

    runner = make_runner(kind, n_episodes=5, max_episode_steps=6, seed=3, record_minari="tests/endless-v0")
    stats = runner.run(ENDLESS, RANDOM, output_dir=tmp_path)
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / MINARI_DIR))
    dataset = minari.load_dataset("tests/endless-v0")
    assert (dataset.total_episodes, dataset.total_steps) == (5, 30)
    assert not (tmp_path / MINARI_PARTS_DIR).exists()
    for episode in dataset.iterate_episodes():
        # EndlessEnv observes the step count and pays the action taken; the time limit truncates.
        np.testing.assert_array_equal(episode.observations["observation"][:, 0], np.arange(7))
        np.testing.assert_array_equal(episode.rewards, episode.actions["action"])
        assert episode.truncations.tolist() == [False] * 5 + [True] and not episode.terminations.any()
        # RandomPolicy samples the 3 actions uniformly; Minari's infos go with the 7 observations.
        np.testing.assert_allclose(episode.infos["log_prob"], [-np.log(3.0)] * 6 + [np.nan])
    assert "infos['log_prob'] holds the log-probability" in dataset.storage.metadata["description"]
    recorded_return = sum(float(episode.rewards.sum()) for episode in dataset.iterate_episodes())
    assert recorded_return == pytest.approx(stats["episode_return"]["mean"] * 5)
    # Seeded runs record the same episodes in the same order.
    again = make_runner(kind, n_episodes=5, max_episode_steps=6, seed=3, record_minari="tests/endless-v1")
    again.run(ENDLESS, RANDOM, output_dir=tmp_path)
    first, second = (list(minari.load_dataset(name).iterate_episodes())
                     for name in ("tests/endless-v0", "tests/endless-v1"))
    assert [episode.actions["action"].tolist() for episode in first] == \
        [episode.actions["action"].tolist() for episode in second]


def test_record_minari_refuses_a_taken_id_before_running_and_a_bad_one_at_once(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="runner.record_minari: expected a Minari dataset id"):
        make_runner("sequential", record_minari="tests/no-version")
    make_runner("sequential", n_episodes=1, max_episode_steps=2, record_minari="taken-v0").run(
        ENDLESS, RANDOM, output_dir=tmp_path)
    (tmp_path / "stats.tsv").unlink()
    with pytest.raises(ConfigError, match="a Minari dataset taken-v0 already exists"):
        make_runner("parallel", n_episodes=2, record_minari="taken-v0").run(ENDLESS, RANDOM,
                                                                            output_dir=tmp_path)
    assert not (tmp_path / "stats.tsv").exists()
