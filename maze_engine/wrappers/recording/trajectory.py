"""TrajectoryRecordingWrapper: writes every episode as a trajectory file, e.g. for imitation learning."""

import os
from pathlib import Path
from typing import Any

from maze_engine.core.env.structured_env import EnvStep, StructuredEnv
from maze_engine.records.trajectory import TrajectoryBuffer
from maze_engine.wrappers.recording.episode_id import EpisodeIdWrapper


class TrajectoryRecordingWrapper(EpisodeIdWrapper):
    """Records each step (maze_state before the action, maze_action, observation, action, reward, done,
    terminated, truncated, actor) and writes the episode to ``<output_dir>/<episode_id>.npz``.

    An episode is written when it ends (``done``), when a reset cuts it short, and on ``close``; cut-short
    episodes are marked incomplete. Steps are only appended while the episode runs; stacking and writing
    happen once at its end. Read the files back with ``maze_engine.read_trajectories(output_dir)``.

    >>> import tempfile
    >>> from maze_engine import GymMazeEnv, read_trajectories
    >>> directory = tempfile.mkdtemp()
    >>> env = TrajectoryRecordingWrapper.wrap(GymMazeEnv("CartPole-v1"), output_dir=directory)
    >>> _ = env.reset()
    >>> for _ in range(3):
    ...     _ = env.step({"action": 1})
    >>> env.close()
    >>> trajectory = next(read_trajectories(directory))
    >>> trajectory.episode_id == env.episode_id, trajectory.actions["action"].tolist()
    (True, [1, 1, 1])
    """

    def __init__(self, env: StructuredEnv, output_dir: str | os.PathLike[str] = "trajectory_data") -> None:
        super().__init__(env)
        self.output_dir = Path(output_dir)
        # Created up front: an empty directory reads back as "no episodes" rather than as a missing path.
        self.output_dir.mkdir(parents=True, exist_ok=True)
        self.last_written: Path | None = None
        self._buffer = TrajectoryBuffer()
        self._last_observation: dict[str, Any] | None = None

    def reset(self) -> dict[str, Any]:
        self._write(complete=False)
        observation = self.env.reset()
        self._open_episode()
        self._last_observation = observation
        return observation

    def step(self, action: dict[str, Any]) -> EnvStep:
        if not self._episode_open:  # stepping on after ``done`` without a reset: record a new episode
            self._open_episode()
        maze_env = self.maze_env
        maze_state = maze_env.last_maze_state
        actor_id = self.env.actor_id()
        observation, reward, done, info = self.env.step(action)
        truncated = bool(info.get("truncated", False))
        self._buffer.append(observation=self._last_observation or {}, action=action, reward=reward, done=done,
                            terminated=bool(info.get("terminated", done and not truncated)),
                            truncated=truncated, actor_id=actor_id, maze_state=maze_state,
                            maze_action=maze_env.last_maze_action)
        self._last_observation = observation
        if done:
            self._write(complete=True)
        return observation, reward, done, info

    def close(self) -> None:
        self._write(complete=False)
        self.env.close()

    def _write(self, complete: bool) -> None:
        """Write the recorded steps, if any, and end the episode."""
        if len(self._buffer):
            assert self.episode_id is not None  # steps are only recorded in an open episode
            self.last_written = self._buffer.write(self.output_dir, self.episode_id, complete)
        self._close_episode()
