"""Which episodes are recorded, and where their chunks go (implements ``worker.episodes.recording``'s
``ExperienceRecorder``).

An episode is recorded when a hash of its id falls below ``experience.sample``: every worker decides the
same for the same id, so an episode that moves between workers stays recorded (or not) throughout. Each
recorded episode gets a ``RunBuffer`` with a fresh run id; a buffer exported by another worker is adopted
with its run id and chunk count, so the run stays one coherent series of records.
"""

from __future__ import annotations

import hashlib
import logging
import uuid
from collections.abc import Callable

from worker.experience.buffer import Chunk, RunBuffer, adopt_buffer
from worker.experience.record import RecordError
from worker.settings import ExperienceSettings

logger = logging.getLogger(__name__)


def sampled(episode: str, fraction: float) -> bool:
    """Whether ``episode`` is among the ``fraction`` of episodes recorded (a hash of its id, so every
    worker agrees)."""
    if fraction >= 1.0:
        return True
    if fraction <= 0.0:
        return False
    digest = hashlib.blake2b(episode.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big") < fraction * 2 ** 64


class Recorder:
    """Opens and adopts the RunBuffers of recorded episodes; their chunks go to ``submit`` (the publisher
    thread's ``offer``)."""

    def __init__(self, settings: ExperienceSettings, submit: Callable[[Chunk], None]) -> None:
        self.settings = settings
        self.submit = submit

    def open(self, episode: str, policy_version: int | None, resumed_at: int | None) -> RunBuffer | None:
        if not sampled(episode, self.settings.sample):
            return None
        return RunBuffer(self.submit, self.settings.chunk_steps, uuid.uuid4().hex, episode, policy_version,
                         resumed_at)

    def adopt(self, episode: str, blob: bytes) -> RunBuffer | None:
        try:
            return adopt_buffer(blob, self.submit, self.settings.chunk_steps, episode)
        except RecordError as err:
            logger.error("episode %s: its recorded steps cannot be taken over (%s); its run ends unfinished",
                         episode, err)
            return None
