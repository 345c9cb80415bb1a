"""The trajectory file format behind TrajectoryRecordingWrapper: structures, fallbacks, ordering, errors."""

import os
from dataclasses import dataclass

import numpy as np
import pytest

from maze_engine import ActorID, MazeError, read_trajectories
from maze_engine.records.trajectory import TrajectoryBuffer, TrajectoryFormatError, read_trajectory


def _append(buffer, observation, maze_state=None, maze_action=None, actor_id=ActorID(0, 0), reward=0.0):
    buffer.append(observation=observation, action={"a": 0}, reward=reward, done=False, terminated=False,
                  truncated=False, actor_id=actor_id, maze_state=maze_state, maze_action=maze_action)


@dataclass
class Custom:
    name: str


def test_nested_structures_round_trip(tmp_path):
    buffer = TrajectoryBuffer()
    for t in range(3):
        _append(buffer, {"pair": (np.full(2, t, dtype=np.int8), float(t)), "nested": {"x/y": np.eye(2) * t}},
                maze_state={"text": f"s{t}", 1: t}, actor_id=ActorID("place", t % 2))
    trajectory = read_trajectory(buffer.write(tmp_path, "nested", complete=True))
    first, second = trajectory.observations["pair"]
    assert first.dtype == np.int8 and first.tolist() == [[0, 0], [1, 1], [2, 2]]
    assert second.tolist() == [0.0, 1.0, 2.0]
    assert trajectory.observations["nested"]["x/y"].shape == (3, 2, 2)
    assert trajectory.maze_states["text"].tolist() == ["s0", "s1", "s2"]
    assert trajectory.maze_states[1].tolist() == [0, 1, 2]  # integer keys keep their type
    assert trajectory.actor_ids == [ActorID("place", 0), ActorID("place", 1), ActorID("place", 0)]
    assert trajectory.maze_actions == [None, None, None]
    assert len(buffer) == 0  # written buffers start over


def test_values_that_cannot_be_stacked_fall_back_to_json(tmp_path):
    buffer = TrajectoryBuffer()
    _append(buffer, {"ragged": [1, 2]}, maze_state=Custom("a"), maze_action={"k": 1})
    _append(buffer, {"ragged": [1, 2, 3]}, maze_state=Custom("b"), maze_action={"other": [1, "x"]})
    trajectory = read_trajectory(buffer.write(tmp_path, "fallback", complete=False))
    assert trajectory.observations["ragged"] == [[1, 2], [1, 2, 3]]
    assert trajectory.maze_states == ["Custom(name='a')", "Custom(name='b')"]
    assert trajectory.maze_actions == [{"k": 1}, {"other": [1, "x"]}]
    assert not trajectory.complete


def test_mixed_kinds_are_not_silently_converted(tmp_path):
    buffer = TrajectoryBuffer()
    _append(buffer, {"value": 1}, actor_id=ActorID(0, 0))
    _append(buffer, {"value": "one"}, actor_id=ActorID("x", 0))
    trajectory = read_trajectory(buffer.write(tmp_path, "mixed", complete=True))
    assert trajectory.observations["value"] == [1, "one"]
    assert [actor.step_key for actor in trajectory.actor_ids] == [0, "x"]


def test_recorded_arrays_are_snapshots(tmp_path):
    buffer = TrajectoryBuffer()
    shared = np.zeros(2)
    for t in range(3):
        shared[:] = t  # an env that reuses its observation array
        _append(buffer, {"obs": shared}, maze_state=shared)
    trajectory = read_trajectory(buffer.write(tmp_path, "snap", complete=True))
    assert trajectory.observations["obs"][:, 0].tolist() == [0, 1, 2]
    assert trajectory.maze_states[:, 0].tolist() == [0, 1, 2]


def test_files_are_read_oldest_first(tmp_path):
    for name in ["c", "a", "b"]:
        buffer = TrajectoryBuffer()
        _append(buffer, {"obs": 0})
        path = buffer.write(tmp_path / "sub", name, complete=True)
        # Distinct modification times even on coarse clocks.
        stamp = {"c": 1_000, "a": 2_000, "b": 3_000}[name]
        os.utime(path, ns=(stamp * 10**9, stamp * 10**9))
    assert [t.episode_id for t in read_trajectories(tmp_path)] == ["c", "a", "b"]


def test_errors(tmp_path):
    with pytest.raises(MazeError, match="no steps"):
        TrajectoryBuffer().write(tmp_path, "empty", complete=True)
    np.savez(tmp_path / "foreign.npz", data=np.zeros(2))
    with pytest.raises(TrajectoryFormatError, match="foreign.npz"):
        list(read_trajectories(tmp_path))
    (tmp_path / "broken.npz").write_bytes(b"not a zip")
    with pytest.raises(TrajectoryFormatError, match="broken.npz"):
        read_trajectory(tmp_path / "broken.npz")
    with pytest.raises(TrajectoryFormatError, match="directory"):
        list(read_trajectories(tmp_path / "absent"))
