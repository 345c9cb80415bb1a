"""Reading the experience stream back: records from an offset, stitched into whole recorded episodes.

The chunks of one run may come from several workers (an episode handed over mid-way) and need not arrive in
order: ``Stitcher`` keeps each run's chunks until its final chunk and every chunk before it are there, then
joins their columns into one ``RecordedEpisode``. A chunk seen twice (a republished record) counts once;
runs that never complete (their worker crashed) are counted, not returned.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from worker.broker.stream import StreamNotFound, StreamReader, offset_argument
from worker.experience.record import ExperienceRecord, RecordError, concatenate, decode_record
from worker.settings import BrokerSettings
from worker.wire import topology

logger = logging.getLogger(__name__)


@dataclass
class RecordedEpisode:
    """One run, all its chunks joined: ``columns`` as in a record, ``steps`` long."""

    run: str
    episode: str
    policy_name: str
    policy_version: int | None
    workers: list[str]
    """The workers that published its chunks, in chunk order (more than one after a hand-off)."""
    end: str | None
    steps: int
    columns: dict[str, Any] | None
    final_observation: Any
    resumed_at: int | None = None
    mode: str = "act"


@dataclass
class Stitcher:
    """Chunks in, complete episodes out (``add`` returns one when a run completes)."""

    pending: dict[str, dict[int, ExperienceRecord]] = field(default_factory=dict)
    completed: set[str] = field(default_factory=set)
    """Runs already returned: a chunk of one arriving again is a duplicate."""
    duplicates: int = 0
    broken: int = 0
    """Runs whose chunks do not join (their seqs leave a gap): skipped."""

    def add(self, record: ExperienceRecord) -> RecordedEpisode | None:
        if record.run in self.completed:
            self.duplicates += 1
            return None
        chunks = self.pending.setdefault(record.run, {})
        if record.chunk in chunks:
            self.duplicates += 1
            return None
        chunks[record.chunk] = record
        last = max(chunks)
        if not chunks[last].final or len(chunks) != last + 1:
            return None
        del self.pending[record.run]
        self.completed.add(record.run)
        return self._join([chunks[index] for index in range(last + 1)])

    @property
    def unfinished(self) -> int:
        """Runs with chunks but no complete set (yet)."""
        return len(self.pending)

    def _join(self, chunks: list[ExperienceRecord]) -> RecordedEpisode | None:
        final = chunks[-1]
        with_steps = [chunk.columns for chunk in chunks if chunk.columns is not None]
        # Optional columns (a shadow candidate's) join only when every chunk has them.
        common = set.intersection(*(set(columns) for columns in with_steps)) if with_steps else set()
        columns = concatenate([{key: value for key, value in columns.items() if key in common}
                               for columns in with_steps]) if with_steps else None
        steps = sum(chunk.steps for chunk in chunks)
        if columns is not None:
            seqs = columns["seq"]
            if steps != len(seqs) or np.any(np.diff(seqs) != 1):
                self.broken += 1
                logger.warning("run %s of episode %s: its chunks leave a gap in the seqs; skipped", final.run,
                               final.episode)
                return None
        return RecordedEpisode(final.run, final.episode, final.policy_name, final.policy_version,
                               [chunk.worker for chunk in chunks], final.end, steps, columns,
                               final.final_observation, chunks[0].resumed_at, final.mode)


@dataclass
class ReadStats:
    """What a read saw besides episodes."""

    records: int = 0
    unreadable: int = 0
    last_offset: int = -1
    policies: set[str] = field(default_factory=set)


def read_records(settings: BrokerSettings, start: str = "first", idle_s: float = 1.0,
                 stats: ReadStats | None = None) -> Iterator[ExperienceRecord]:
    """The records of ``<prefix>.experience`` from ``start`` (``first``, ``last``, ``next``, an offset or an
    ISO time) until the stream has been quiet for ``idle_s`` seconds.

    Raises StreamNotFound naming the stream when it does not exist, ValueError for a bad ``start``.
    """
    stats = stats if stats is not None else ReadStats()
    name = topology.experience_stream(settings.prefix)
    offset = offset_argument(start)
    reader = StreamReader(settings, f"maze-worker experience reader {settings.prefix}")
    reader.connect()
    try:
        if not reader.exists(name):
            raise StreamNotFound(f"{name}: the experience stream does not exist; start workers with "
                                 f"experience.record=true and broker.prefix={settings.prefix}")
        for record_offset, body in reader.read(name, offset, idle_s):
            stats.records += 1
            stats.last_offset = record_offset
            try:
                record = decode_record(body)
            except RecordError as err:
                stats.unreadable += 1
                logger.warning("skipping an unreadable record at offset %d of %s: %s", record_offset, name,
                               err)
                continue
            stats.policies.add(record.policy_name)
            yield record
    finally:
        reader.close()


def read_episodes(settings: BrokerSettings, start: str = "first", idle_s: float = 1.0,
                  policy: str | None = None, stats: ReadStats | None = None,
                  stitcher: Stitcher | None = None) -> Iterator[RecordedEpisode]:
    """The recorded episodes in the stream (of ``policy`` only, when given), as their runs complete."""
    stitcher = stitcher if stitcher is not None else Stitcher()
    for record in read_records(settings, start, idle_s, stats):
        if policy is not None and record.policy_name != policy:
            continue
        episode = stitcher.add(record)
        if episode is not None:
            yield episode
