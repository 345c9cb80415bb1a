"""EpisodeIdWrapper: the base of wrappers that file what they record under an episode id.

Trajectory files and event-log rows of one episode carry the same id: at reset a wrapper takes the id that
was set for the episode, else the id of the nearest episode-id wrapper below it, else a fresh ``uuid4`` hex.
"""

import re
import uuid
from typing import Any

from maze_engine.core.env.structured_env import StructuredEnv
from maze_engine.core.errors import ConfigError
from maze_engine.wrappers.wrapper import Wrapper

# Ids name files, so they are restricted to characters that are safe in file names everywhere.
_EPISODE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,199}")


def check_episode_id(episode_id: Any) -> str:
    """``episode_id`` if it is usable as a file name, else ConfigError naming the field."""
    if not isinstance(episode_id, str) or not _EPISODE_ID.fullmatch(episode_id):
        raise ConfigError("episode_id: expected 1 to 200 letters, digits, '_', '.' or '-' (starting with a "
                          f"letter or digit), got {episode_id!r}")
    return episode_id


class EpisodeIdWrapper(Wrapper[StructuredEnv]):
    """Keeps ``episode_id``: None before the first reset, then the id of the current (or last) episode."""

    def __init__(self, env: StructuredEnv) -> None:
        super().__init__(env)
        self.episode_id: str | None = None
        self._next_episode_id: str | None = None
        self._episode_open = False

    def set_episode_id(self, episode_id: str) -> None:
        """Name the episode in progress, or the next one if none is in progress; applies to every
        episode-id wrapper from here down the stack."""
        check_episode_id(episode_id)
        for wrapper in self.wrapper_stack():
            if isinstance(wrapper, EpisodeIdWrapper):
                wrapper._assign_episode_id(episode_id)

    def _assign_episode_id(self, episode_id: str) -> None:
        if self._episode_open:
            self.episode_id = episode_id
        else:
            self._next_episode_id = episode_id

    def _open_episode(self) -> None:
        """Pick the id of the episode that the reset just started (call after resetting the env below)."""
        episode_id, self._next_episode_id = self._next_episode_id, None
        if episode_id is None:
            below = self.env.find_wrapper(EpisodeIdWrapper) if isinstance(self.env, Wrapper) else None
            episode_id = below.episode_id if below is not None and below.episode_id else uuid.uuid4().hex
        self.episode_id = episode_id
        self._episode_open = True

    def _close_episode(self) -> None:
        """Mark the episode as finished; a later ``set_episode_id`` names the next one."""
        self._episode_open = False
