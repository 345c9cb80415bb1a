"""EventLogWrapper: writes the events each step raises to one TSV file per event name."""

import os
from typing import Any

from maze_engine.core.env.structured_env import EnvStep, StructuredEnv
from maze_engine.records.event_log import EventLogWriter
from maze_engine.wrappers.recording.episode_id import EpisodeIdWrapper


class EventLogWrapper(EpisodeIdWrapper):
    """After every step, appends the step's events (``maze_env.get_step_events()``) to
    ``<output_dir>/<event name>.tsv`` with the columns ``episode_id``, ``step`` and the event's attributes.

    Rows are buffered and written when the episode ends (``done`` or a reset) and on ``close``. Read them
    back with ``maze_engine.read_event_logs(output_dir)``. The episode id is shared with a
    TrajectoryRecordingWrapper in the same stack.

    >>> import tempfile
    >>> from maze_engine import GymMazeEnv, read_event_logs
    >>> directory = tempfile.mkdtemp()
    >>> env = EventLogWrapper.wrap(GymMazeEnv("CartPole-v1"), output_dir=directory)
    >>> _ = env.reset()
    >>> _ = env.step({"action": 0})
    >>> env.close()
    >>> read_event_logs(directory)  # CartPole raises no events
    {}
    """

    def __init__(self, env: StructuredEnv, output_dir: str | os.PathLike[str] = "event_logs") -> None:
        super().__init__(env)
        self.output_dir = output_dir
        self.writer = EventLogWriter(output_dir)
        # Created up front: an empty directory reads back as "no events" rather than as a missing path.
        self.writer.directory.mkdir(parents=True, exist_ok=True)
        self._step = 0

    def reset(self) -> dict[str, Any]:
        self._end_episode()
        observation = self.env.reset()
        self._open_episode()
        self._step = 0
        return observation

    def step(self, action: dict[str, Any]) -> EnvStep:
        if not self._episode_open:  # stepping on after ``done`` without a reset
            self._open_episode()
            self._step = 0
        observation, reward, done, info = self.env.step(action)
        events = self.maze_env.get_step_events()
        if events:
            assert self.episode_id is not None  # set by _open_episode
            for event in events:
                self.writer.add(self.episode_id, self._step, event)
        self._step += 1
        if done:
            self._end_episode()
        return observation, reward, done, info

    def close(self) -> None:
        self._end_episode()
        self.writer.close()
        self.env.close()

    def _end_episode(self) -> None:
        self.writer.flush()
        self._close_episode()
