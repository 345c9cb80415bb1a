"""TrajectoryRecordingWrapper: files written per episode and read back with exact contents."""

import numpy as np
import pytest

from maze_engine import (
    ActorID,
    ConfigError,
    GymMazeEnv,
    TimeLimitWrapper,
    TrajectoryRecordingWrapper,
    instantiate,
    read_trajectories,
)
from maze_engine.records.trajectory import read_trajectory


def _play(env, actions):
    env.reset()
    for action in actions:
        env.step({"action": action})


def test_finished_episode_round_trip(counter_env, tmp_path):
    env = TrajectoryRecordingWrapper.wrap(counter_env(terminate_at=3), output_dir=tmp_path)
    _play(env, [2, 1, 0])
    assert env.last_written == tmp_path / f"{env.episode_id}.npz"
    (trajectory,) = read_trajectories(tmp_path)
    assert trajectory.episode_id == env.episode_id and trajectory.complete and len(trajectory) == 3
    # The observation each action was taken on, i.e. the one before the step.
    assert trajectory.observations["observation"].tolist() == [[0, 10], [1, 11], [2, 12]]
    assert trajectory.observations["observation"].dtype == np.float32
    assert trajectory.actions["action"].tolist() == [2, 1, 0]
    assert trajectory.rewards.tolist() == [2.0, 1.0, 0.0]
    assert trajectory.dones.tolist() == [False, False, True]
    assert trajectory.terminated.tolist() == [False, False, True]
    assert trajectory.truncated.tolist() == [False, False, False]
    assert trajectory.actor_ids == [ActorID(0, 0)] * 3
    assert trajectory.maze_states.tolist() == [[0, 10], [1, 11], [2, 12]]
    assert trajectory.maze_actions.tolist() == [2, 1, 0]
    step = trajectory.step(-1)
    assert step.observation["observation"].tolist() == [2, 12] and step.action == {"action": 0}
    assert step.done and step.terminated and not step.truncated
    assert [s.reward for s in trajectory.steps()] == [2.0, 1.0, 0.0]


def test_file_holds_plain_arrays_only(counter_env, tmp_path):
    env = TrajectoryRecordingWrapper.wrap(counter_env(terminate_at=2), output_dir=tmp_path)
    _play(env, [1, 1])
    with np.load(env.last_written, allow_pickle=False) as archive:
        assert sorted(archive.files) == sorted(
            ["metadata", "observation/observation", "action/action", "reward", "done", "terminated",
             "truncated", "actor_step_key", "actor_agent_id", "maze_state", "maze_action"])
        assert archive["observation/observation"].shape == (2, 2)
    assert [path.name for path in tmp_path.iterdir()] == [env.last_written.name]  # no temporary left


def test_cut_short_episodes_are_written_incomplete(counter_env, tmp_path):
    env = TrajectoryRecordingWrapper.wrap(counter_env(), output_dir=tmp_path)
    _play(env, [1, 1])
    first = env.episode_id
    _play(env, [0])
    second = env.episode_id
    env.reset()  # no steps yet: nothing to write
    env.close()
    trajectories = list(read_trajectories(tmp_path))
    summary = [(t.episode_id, len(t), t.complete) for t in trajectories]
    assert summary == [(first, 2, False), (second, 1, False)]
    assert first != second and len(first) == 32


def test_time_limit_truncation_is_recorded(counter_env, tmp_path):
    env = TrajectoryRecordingWrapper.wrap(TimeLimitWrapper.wrap(counter_env(), max_episode_steps=2),
                                          output_dir=tmp_path)
    _play(env, [0, 0])
    (trajectory,) = read_trajectories(tmp_path)
    assert trajectory.complete
    assert trajectory.truncated.tolist() == [False, True]
    assert trajectory.terminated.tolist() == [False, False]


def test_dict_observations(counter_env, tmp_path):
    env = TrajectoryRecordingWrapper.wrap(counter_env(dict_obs=True, terminate_at=2), output_dir=tmp_path)
    _play(env, [1, 2])
    (trajectory,) = read_trajectories(tmp_path)
    assert sorted(trajectory.observations) == ["count", "vector"]
    assert trajectory.observations["count"].tolist() == [0, 1]
    assert trajectory.observations["vector"].tolist() == [[0, 10], [1, 11]]
    assert trajectory.maze_states["count"].tolist() == [0, 1]


def test_cartpole_episodes(tmp_path):
    env = TrajectoryRecordingWrapper.wrap(GymMazeEnv("CartPole-v1"), output_dir=tmp_path)
    env.seed(1)
    lengths = []
    for _ in range(3):
        env.reset()
        done, steps = False, 0
        while not done:
            done = env.step({"action": steps % 2})[2]
            steps += 1
        lengths.append(steps)
    trajectories = list(read_trajectories(tmp_path))
    assert [len(t) for t in trajectories] == lengths
    assert len({t.episode_id for t in trajectories}) == 3
    for trajectory in trajectories:
        np.testing.assert_array_equal(trajectory.observations["observation"], trajectory.maze_states)
        assert trajectory.observations["observation"].shape == (len(trajectory), 4)


def test_set_episode_id(counter_env, tmp_path):
    env = TrajectoryRecordingWrapper.wrap(counter_env(terminate_at=1), output_dir=tmp_path)
    env.set_episode_id("before-reset")
    _play(env, [0])
    env.reset()
    env.set_episode_id("renamed.while_running")
    env.step({"action": 0})
    names = sorted(path.name for path in tmp_path.iterdir())
    assert names == ["before-reset.npz", "renamed.while_running.npz"]
    _play(env, [0])
    env.set_episode_id("before-reset")  # not in progress: names the next episode, whose file gets a suffix
    _play(env, [0])
    assert (tmp_path / "before-reset-1.npz").exists()
    assert read_trajectory(tmp_path / "before-reset-1.npz").episode_id == "before-reset"


@pytest.mark.parametrize("bad", ["", "../escape", "has space", "-leading", 7, None])
def test_invalid_episode_ids_are_rejected(counter_env, tmp_path, bad):
    env = TrajectoryRecordingWrapper.wrap(counter_env(), output_dir=tmp_path)
    with pytest.raises(ConfigError, match="episode_id"):
        env.set_episode_id(bad)


def test_output_dir_exists_before_any_episode(counter_env, tmp_path):
    TrajectoryRecordingWrapper.wrap(counter_env(), output_dir=tmp_path / "out")
    assert list(read_trajectories(tmp_path / "out")) == []


def test_instantiate_from_config(counter_env, tmp_path):
    config = {"_target_": "maze_engine.TrajectoryRecordingWrapper", "output_dir": str(tmp_path / "out")}
    env = instantiate(config, env=counter_env(terminate_at=1))
    assert isinstance(env, TrajectoryRecordingWrapper)
    _play(env, [0])
    assert len(list(read_trajectories(tmp_path / "out"))) == 1
