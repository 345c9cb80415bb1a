"""Shard ownership at run time: subscribe, learn who is active, pass shards on, hand episodes over.

Every agent worker subscribes to every shard queue of its prefix. Single active consumer gives each queue to
one subscriber at a time, and RabbitMQ says nothing about who that is: a worker learns it is active on a
shard from that shard's first delivery. Then:

- it owns the shard (``worker/cluster/ownership.py`` over the live set of
  ``worker/cluster/membership.py``): it first imports the shard's hand-off records
  (``<prefix>.handoff.NN``: the histories of the episodes that moved to it, replayed through fresh
  deployments) and then answers;
- it does not own it: it *passes the shard on*. Hand-off records of any episodes of that shard it holds go
  out first (with publisher confirms), then its consumer is cancelled, the deliveries it got are given back
  unanswered, and it subscribes again, at the back of the line, a heartbeat interval later. The broker
  activates the next subscriber; passing repeats until the owner is reached.

When the live set changes, each worker releases (passes on) the active shards it no longer owns, so a
planned move is a hand-off: the episodes travel with their wrapper-stack state and continue as if they had
not moved. A crashed worker publishes nothing; its shards go to the stand-bys and the states of its
episodes are ``lost`` (``episodes.on_lost``). A state that reaches the owner of its shard while another
worker holds its episode (after a broker restart rebuilt the hash ring) is held back while the episode is
claimed from that worker (``worker/cluster/claims.py``). One thread drives all of this, between batches.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from worker.broker.agent_transport import Delivery, Transport
from worker.cluster.claims import EpisodeClaims
from worker.cluster.episode_shards import EpisodeShards
from worker.cluster.handover import EpisodeHandover
from worker.cluster.membership import (
    Heartbeat,
    HeartbeatError,
    Membership,
    decode_heartbeat,
    encode_heartbeat,
)
from worker.cluster.ownership import assign, owned_by
from worker.episodes.table import EpisodeTable
from worker.metrics import WorkerMetrics
from worker.settings import WorkerSettings
from worker.wire import topology

logger = logging.getLogger(__name__)

PRUNE_INTERVAL_S = 10.0


@dataclass
class _Shard:
    """This worker's consumer on one shard queue."""

    index: int
    queue: str
    tag: str | None = None
    """Consumer tag while subscribed."""
    active: bool = False
    """A delivery came through the current consumer: the broker made it the active one."""
    resubscribe_at: float | None = None
    """When to subscribe again after passing the shard on."""


class ShardCoordinator:
    """The service's partner for everything about shards and other workers; see the module docstring."""

    def __init__(self, settings: WorkerSettings, worker_id: str, transport: Transport, table: EpisodeTable,
                 metrics: WorkerMetrics, episode_shards: EpisodeShards | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.settings = settings
        self.worker_id = worker_id
        self.transport = transport
        self.table = table
        self.metrics = metrics
        self.clock = clock
        broker = settings.broker
        self.prefix, self.shards = broker.prefix, broker.shards
        self.membership = Membership(worker_id, settings.cluster.liveness_timeout_s, clock)
        self._shards = [_Shard(index, topology.shard_queue(self.prefix, index, self.shards))
                        for index in range(self.shards)]
        self._by_tag: dict[str, _Shard] = {}
        self._live: frozenset[str] = frozenset()
        self._owned: frozenset[int] = frozenset()
        self.episode_shards = episode_shards or EpisodeShards()
        """The shard of each episode this worker may hold, and the shards taken over (the table's
        ``lost_check`` reads them)."""
        self._others_seen = False
        self._next_heartbeat = 0.0
        self._next_prune = 0.0
        self._connected_before = False
        self.handover = EpisodeHandover(self.prefix, self.shards, worker_id, transport, table, metrics,
                                        self.episode_shards, self._heartbeat_if_due)
        self.claims = EpisodeClaims(settings.cluster.heartbeat_interval_s, max(1, broker.prefetch // 2),
                                    clock)
        """States held back while their episodes are asked for from the other workers
        (worker/cluster/claims.py)."""

    # -- connection --------------------------------------------------------------------------------------

    def connected(self) -> list[Delivery]:
        """After (re)connecting: declare the cluster names, subscribe to every shard, hear the others, then
        announce this worker. Returns the deliveries that arrived meanwhile (to ``admit`` and answer).

        Subscribing comes first, so that a worker whose shards come free on hearing of this one finds it
        already in line; announcing comes last, so that this worker knows the live set when the others
        start handing shards over to it.
        """
        transport = self.transport
        transport.declare_cluster(self.worker_id)
        for shard in self._shards:
            self._subscribe(shard)
        held: list[Delivery] = []
        if self._connected_before:
            # Nobody's heartbeats could reach us while we were away: give everyone a fresh timeout.
            self.membership.refresh_all()
        else:
            held = self._listen()
        self._connected_before = True
        self._heartbeat()
        self._update_assignment()
        return held

    def _listen(self) -> list[Delivery]:
        """Hear the others' heartbeats for a little over one interval before owning anything."""
        held: list[Delivery] = []
        deadline = self.clock() + self.settings.cluster.heartbeat_interval_s * 1.2
        while self.clock() < deadline:
            held.extend(self.transport.poll(0.05))
            self._take_heartbeats()
        return held

    def disconnected(self) -> None:
        """The connection is gone: consumers and activations with it (the episodes stay)."""
        for shard in self._shards:
            shard.tag, shard.active, shard.resubscribe_at = None, False, None
        self._by_tag.clear()
        self.claims.clear()

    # -- deliveries --------------------------------------------------------------------------------------

    def admit(self, deliveries: Sequence[Delivery]) -> list[Delivery]:
        """The deliveries this worker answers now; the rest go back (shards not owned are passed on).

        The first delivery on a shard makes the worker its active consumer: an owned shard's hand-off
        records are imported before anything of it is answered.
        """
        if not deliveries:
            return []
        kept: list[Delivery] = []
        passing: dict[int, list[Delivery]] = {}
        for delivery in deliveries:
            shard = self._by_tag.get(delivery.consumer_tag)
            if shard is None:  # a consumer cancelled meanwhile
                self.transport.nack(delivery.tag)
                continue
            if shard.index not in self._owned:
                passing.setdefault(shard.index, []).append(delivery)
                continue
            if not shard.active:
                self._activate(shard)
            self.episode_shards.note(delivery.routing_key, shard.index)
            kept.append(delivery)
        for index, given_back in passing.items():
            self._release(self._shards[index], given_back, "passing on a shard it does not own")
        return kept

    def _activate(self, shard: _Shard) -> None:
        started = self.clock()
        shard.active = True
        if self._others_seen or self.membership.others():
            self.episode_shards.adopt(shard.index)
        imported = self.handover.take_in(shard.index)
        took = self.clock() - started
        self.metrics.takeover_seconds.observe(took)
        logger.info("active on shard %d%s", shard.index,
                    f": imported {imported} handed-off episodes in {took:.3f} s" if imported else "")

    def _release(self, shard: _Shard, given_back: Sequence[Delivery], why: str) -> None:
        """Hand the shard's episodes over, cancel the consumer, give deliveries back, re-subscribe later."""
        started = self.clock()
        exported = self.handover.send_out(shard.index)
        transport = self.transport
        held: list[Delivery] = self.claims.drop_shard(shard.index)
        if shard.tag is not None:
            held += transport.cancel_consumer(shard.tag)
            self._by_tag.pop(shard.tag, None)
        for delivery in (*given_back, *held):
            transport.nack(delivery.tag)
        transport.flush()
        shard.tag, shard.active = None, False
        shard.resubscribe_at = self.clock() + self.settings.cluster.heartbeat_interval_s
        self.episode_shards.release(shard.index)
        if exported:
            took = self.clock() - started
            self.metrics.handoff_seconds.observe(took)
            logger.info("%s: handed %d episodes of shard %d over in %.3f s", why, exported, shard.index, took)
        else:
            logger.info("%s: shard %d", why, shard.index)

    def hold_for_claim(self, delivery: Delivery, episode: str) -> bool:
        """Whether to hold ``delivery`` back, a state (seq > 0) of ``episode`` which this worker does not
        hold, and ask the other workers for the episode (see worker/cluster/claims.py). For admitted
        deliveries."""
        shard = self._by_tag.get(delivery.consumer_tag)
        if shard is None or not shard.active or not self.membership.others() \
                or self.table.recently_closed(episode):
            return False
        return self.claims.hold(episode, shard.index, delivery)

    def _settle_claims(self) -> list[Delivery]:
        """Send new claims, import what they brought, and return the held deliveries to answer now."""
        unsent = self.claims.take_unsent()
        if unsent:
            logger.info("asking the other workers for %d episodes whose states arrived here", len(unsent))
            self._heartbeat(unsent)
        for index in sorted(self.claims.shards()):
            shard = self._shards[index]
            if shard.active and index in self._owned:
                imported = self.handover.take_in(shard.index)
                if imported:
                    logger.info("took over %d claimed episodes on shard %d", imported, index)
        return self.claims.ready(self.table.__contains__)

    def _give(self, heartbeat: Heartbeat) -> None:
        """Hand the episodes another worker claims, where this one holds them, over to the claimed shards."""
        by_shard: dict[int, list[str]] = {}
        for episode, index in heartbeat.claims:
            if episode in self.table and index < self.shards:
                by_shard.setdefault(index, []).append(episode)
        for index, episodes in by_shard.items():
            sent = self.handover.send_out(index, episodes)
            logger.info("handed %d episodes over to shard %d, where worker %s now receives their states",
                        sent, index, heartbeat.worker)

    def forget(self, episode: str) -> None:
        """An episode closed: it no longer needs a shard."""
        self.episode_shards.forget(episode)

    # -- time and membership -----------------------------------------------------------------------------

    def tick(self) -> list[Delivery]:
        """Heartbeats in and out, claims, the live set, releasing shards no longer owned, re-subscribing.
        Returns the held-back deliveries to answer now."""
        now = self.clock()
        self._take_heartbeats()
        if now >= self._next_heartbeat:
            self._heartbeat()
        self.membership.expire()
        if self._update_assignment():
            for shard in self._shards:
                if shard.index in self._owned or shard.tag is None:
                    continue
                if shard.active:
                    self._release(shard, (), "shard moved to another worker")
                elif not self.membership.leaving:
                    self._step_back(shard)
        for shard in self._shards:
            if shard.tag is None and shard.resubscribe_at is not None and now >= shard.resubscribe_at \
                    and not self.membership.leaving:
                self._subscribe(shard)
        if now >= self._next_prune:
            self._next_prune = now + PRUNE_INTERVAL_S
            self.episode_shards.prune(lambda episode: episode in self.table or episode in self.claims)
        # Last, so that a state let go here still finds its shard (``lost_check``).
        return self._settle_claims() if self.claims else []

    def _take_heartbeats(self) -> None:
        for body in self.transport.take_heartbeats():
            try:
                heartbeat = decode_heartbeat(body)
            except HeartbeatError as err:
                logger.warning("ignoring a heartbeat: %s", err)
                continue
            except Exception:  # noqa: BLE001 - whoever can publish heartbeats must not stop the worker
                logger.exception("ignoring a heartbeat that could not be read")
                continue
            self.membership.observe(heartbeat)
            if heartbeat.claims and heartbeat.worker != self.worker_id:
                self._give(heartbeat)
        if self.membership.others():
            self._others_seen = True

    def _heartbeat_if_due(self) -> None:
        if self.clock() >= self._next_heartbeat:
            self._heartbeat()

    def _heartbeat(self, claims: tuple[tuple[str, int], ...] = ()) -> None:
        self._next_heartbeat = self.clock() + self.settings.cluster.heartbeat_interval_s
        self.transport.publish_heartbeat(encode_heartbeat(Heartbeat(self.worker_id, self.membership.leaving,
                                                                    claims)))

    def _step_back(self, shard: _Shard) -> None:
        """Subscribe again to a shard this worker stands by on without owning it: at the back of the line,
        behind its owner, so that the owner is next when the shard comes free (one hop, not several)."""
        assert shard.tag is not None
        for delivery in self.transport.cancel_consumer(shard.tag):
            self.transport.nack(delivery.tag)
        self._by_tag.pop(shard.tag, None)
        self._subscribe(shard)

    def _update_assignment(self) -> bool:
        """Recompute the owned shards from the live set; True when the live set changed."""
        live = self.membership.live()
        if live == self._live and live:
            return False
        self._live = live
        owned = frozenset(owned_by(assign(live, self.shards)).get(self.worker_id, [])) if live \
            else frozenset()
        changed = owned != self._owned
        self._owned = owned
        self.metrics.owned_shards.set(len(owned))
        self.metrics.live_workers.set(len(live))
        if changed:
            logger.info("owning %d of %d shards %s among %d live workers", len(owned), self.shards,
                        sorted(owned), len(live))
        return True

    def _subscribe(self, shard: _Shard) -> None:
        shard.resubscribe_at = None
        shard.active = False
        shard.tag = self.transport.consume_queue(shard.queue)
        self._by_tag[shard.tag] = shard

    # -- leaving -----------------------------------------------------------------------------------------

    def announce_leaving(self) -> int:
        """Tell the others this worker stops: they take its shards into their assignment at once. Returns
        how many other workers are live."""
        self.membership.leave()
        self._heartbeat()
        self._update_assignment()
        return len(self.membership.others())

    def leave(self) -> None:
        """Hand every shard over (records first, then the consumer) before the connection closes."""
        if not self.membership.leaving:
            self.announce_leaving()
        for shard in self._shards:
            if shard.tag is not None or self.episode_shards.any_on(shard.index):
                self._release(shard, (), "stopping")
            shard.resubscribe_at = None

    @property
    def owned(self) -> frozenset[int]:
        return self._owned

    @property
    def live(self) -> frozenset[str]:
        return self._live
