"""Handing episodes over between workers through the hand-off queues: send records out, take them in.

``send_out`` exports episodes from the table and publishes their records (with publisher confirms) to a
shard's hand-off queue; ``take_in`` imports what waits on a shard's queue, replaying each history through a
fresh deployment of the episode's policy version. The coordinator decides when; this module knows how.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

from worker.broker.agent_transport import BrokerConnectionLost, Transport
from worker.cluster.episode_shards import EpisodeShards
from worker.episodes.handoff import (
    EpisodeRecord,
    HandoffError,
    decode_records,
    encodable_episodes,
    handoff_message,
    replay,
)
from worker.episodes.table import EpisodeTable
from worker.metrics import WorkerMetrics
from worker.wire import topology

logger = logging.getLogger(__name__)

RECORDS_PER_MESSAGE = 64
"""Episodes per hand-off message at most: few publisher confirms per shard."""
HANDOFF_MAX_BYTES = topology.BROKER_MAX_MESSAGE_BYTES * 3 // 4
"""Bytes per hand-off message at most, well below the broker's message size limit."""
MESSAGE_OVERHEAD = 256
"""Bytes a hand-off message takes besides its episodes' entries (its header: version, shard, worker id)."""


class EpisodeHandover:
    """Moves the episodes of one prefix's shards in and out of ``table`` for worker ``worker_id``."""

    def __init__(self, prefix: str, shards: int, worker_id: str, transport: Transport, table: EpisodeTable,
                 metrics: WorkerMetrics, episode_shards: EpisodeShards,
                 keep_alive: Callable[[], None]) -> None:
        self.prefix, self.shards, self.worker_id = prefix, shards, worker_id
        self.transport = transport
        self.table = table
        self.metrics = metrics
        self.episode_shards = episode_shards
        self.keep_alive = keep_alive
        """Called between imported episodes: sends a heartbeat when one is due."""

    def take_in(self, index: int) -> int:
        """Import the hand-off records waiting for shard ``index``; returns how many episodes came in."""
        queue = topology.handoff_queue(self.prefix, index, self.shards)
        messages = self.transport.get_handoffs(queue)
        if not messages:
            return 0
        imported = 0
        for _tag, body in messages:
            try:
                message = decode_records(body)
            except HandoffError as err:
                logger.error("dropping an unreadable hand-off message on %s: %s", queue, err)
                continue
            for record in message.records:
                self.keep_alive()  # a long import must not look like death, to the others nor to the broker
                source = self.table.source_for(record.policy_version)
                try:
                    deployment = replay(record, source.create())
                except HandoffError as err:
                    logger.error("episode %s cannot be taken over from %s (%s); its next state is handled "
                                 "as lost", record.episode, message.worker, err)
                    continue
                if self.table.adopt(record, deployment, source):
                    self.episode_shards.note(record.episode, index)
                    imported += 1
        self.transport.ack_handoff(messages[-1][0])
        self.metrics.handoffs.labels("in").inc()
        self.metrics.episodes_handed_off.labels("in").inc(imported)
        self.metrics.open_episodes.set(len(self.table))
        return imported

    def send_out(self, index: int, ids: Sequence[str] | None = None) -> int:
        """Hand ``ids`` (by default the episodes of shard ``index``) over to shard ``index``; returns how
        many were sent."""
        if ids is None:
            ids = self.episode_shards.on_shard(index, self.table.__contains__)
        if not ids:
            return 0
        records = self.table.export(ids)
        for episode in ids:
            self.episode_shards.forget(episode)
        queue = topology.handoff_queue(self.prefix, index, self.shards)
        encoded = encodable_episodes(records)  # each episode encoded once; what cannot be is logged
        sent = 0
        for start, end in _message_bounds([(record.episode, len(entry)) for record, entry in encoded]):
            chunk = encoded[start:end]
            body = handoff_message(index, self.worker_id, [entry for _, entry in chunk])
            try:
                self.transport.publish_handoff(queue, body)
            except BrokerConnectionLost:
                self._restore(index, [record for record, _ in encoded[start:]])
                raise
            sent += len(chunk)
        self.metrics.handoffs.labels("out").inc()
        self.metrics.episodes_handed_off.labels("out").inc(sent)
        self.metrics.open_episodes.set(len(self.table))
        return sent

    def _restore(self, index: int, records: Sequence[EpisodeRecord]) -> None:
        """Take back the episodes whose records could not be sent (the connection broke): replayed, they stay
        here as they were, and a later hand-off sends them."""
        for record in records:
            try:
                source = self.table.source_for(record.policy_version)
                self.table.adopt(record, replay(record, source.create()), source)
            except HandoffError as err:
                logger.error("%s; the episode is lost", err)
                continue
            self.episode_shards.note(record.episode, index)
        self.metrics.open_episodes.set(len(self.table))


def _message_bounds(entries: Sequence[tuple[str, int]]) -> list[tuple[int, int]]:
    """Episodes' entries (id, bytes) cut into runs of at most RECORDS_PER_MESSAGE entries and
    HANDOFF_MAX_BYTES bytes per message, as (start, end) pairs; an entry too large for any message is logged
    and left out (the new owner handles its episode as lost)."""
    budget = HANDOFF_MAX_BYTES - MESSAGE_OVERHEAD
    bounds: list[tuple[int, int]] = []
    start, size = 0, 0
    for position, (episode, entry_size) in enumerate(entries):
        if entry_size > budget:
            logger.error("episode %s is not handed over: its record takes %d bytes, more than a hand-off "
                         "message may (%d); the new owner handles it as lost", episode, entry_size,
                         HANDOFF_MAX_BYTES)
            bounds.append((start, position))  # the entries before it; the entry itself is skipped
            start, size = position + 1, 0
            continue
        if position > start and (position - start >= RECORDS_PER_MESSAGE or size + entry_size > budget):
            bounds.append((start, position))
            start, size = position, 0
        size += entry_size
    bounds.append((start, len(entries)))
    return [(first, last) for first, last in bounds if last > first]
