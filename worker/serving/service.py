"""The worker service: connect, consume the owned shards, answer batches of states, reconnect, stop cleanly.

One thread does everything (pika's BlockingConnection is not thread-safe): ``poll`` waits for the first
delivery and drains what else has arrived, the batch goes through the EpisodeTable, the replies are published
and the whole batch is acknowledged with one ``multiple`` ack after them. A lost connection is re-opened with
capped exponential backoff; open episodes are kept, and the broker redelivers what was not acknowledged (the
table answers those from its replay window). ``stop()`` (SIGTERM, SIGINT) stops consuming, answers what the
worker holds, flushes statistics and closes.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

from maze_engine.deployment.factory import DeploymentFactory
from maze_engine.wrappers.logging.log_stats import LogStatsWrapper
from worker.broker.agent_transport import BrokerUnreachable, ConnectionLost, Delivery, Transport
from worker.cluster.coordinator import ShardCoordinator
from worker.cluster.membership import new_worker_id
from worker.cluster.ownership import ShardOwnership
from worker.episodes.table import Answer, ClosedEpisode, EpisodeTable, FinishedEpisodes, error_answer
from worker.metrics import MetricsServer, WorkerMetrics
from worker.policy_store.reload import PolicyReloader, PolicyReloadMetrics, VersionedFactory
from worker.settings import WorkerSettings
from worker.wire.protocol import CONTENT_TYPE, DecodeError, ErrorCode, StateMessage, decode_state
from worker.wire.topology import DeadReason, mask_url

logger = logging.getLogger(__name__)

POLL_TIMEOUT_S = 0.2
"""Longest wait for a delivery; bounds how late stop requests, eviction and statistics are noticed."""
EVICTION_INTERVAL_S = 1.0
STATS_PREFIX = "worker"


def build_factory(policy: Any, env: Any, wrappers: Any = None) -> DeploymentFactory:
    """The DeploymentFactory of the worker: the configured wrappers plus an outermost LogStatsWrapper."""
    return DeploymentFactory(policy, env, with_log_stats(wrappers))


def with_log_stats(wrappers: Any) -> list[Any]:
    """``wrappers`` (any format AgentDeployment accepts) as a list ending in a LogStatsWrapper."""
    if isinstance(wrappers, DictConfig | ListConfig):
        wrappers = OmegaConf.to_container(wrappers, resolve=True)
    if wrappers is None:
        items: list[Any] = []
    elif isinstance(wrappers, Mapping):
        items = [wrappers] if "_target_" in wrappers else [{key: value} for key, value in wrappers.items()]
    else:
        items = list(wrappers)
    items.append({"_target_": LogStatsWrapper, "logging_prefix": STATS_PREFIX})
    return items


class Backoff:
    """Capped exponential delays: initial, 2x, 4x ... up to the cap; ``reset`` after a healthy period."""

    def __init__(self, initial_s: float, max_s: float) -> None:
        self.initial_s = initial_s
        self.max_s = max_s
        self._next = initial_s

    def next_delay(self) -> float:
        delay = self._next
        self._next = min(self._next * 2, self.max_s)
        return delay

    def reset(self) -> None:
        self._next = self.initial_s


class WorkerService:
    """Serves one prefix's shard queues until ``stop()``; see the module docstring."""

    def __init__(self, settings: WorkerSettings, factory: Any, metrics: WorkerMetrics | None = None,
                 transport: Transport | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self.settings = settings
        self.metrics = metrics or WorkerMetrics()
        self.transport = transport or Transport(settings.broker)
        self.ownership = ShardOwnership(settings.broker.prefix, settings.broker.shards)
        self.clock = clock
        self.table = EpisodeTable(factory, settings.episodes, settings.deterministic, clock=clock,
                                  on_closed=self._on_closed)
        self.reloader: PolicyReloader | None = None
        """Loads newer versions of a published policy (``policy=published_policy``), else None."""
        if isinstance(factory, VersionedFactory) and factory.follows_latest:
            self.reloader = PolicyReloader(factory, PolicyReloadMetrics(self.metrics.registry))
            self.table.on_released = self._on_policy_released
        if isinstance(factory, VersionedFactory):
            self.table.version_source = factory.at_version
        self.worker_id = new_worker_id()
        """This worker's id among the agent workers of its prefix (heartbeats, the ``worker`` reply key)."""
        self.table.worker_id = self.worker_id
        self.cluster = ShardCoordinator(settings, self.worker_id, self.transport, self.table, self.metrics,
                                        clock)
        self.consuming = threading.Event()
        """Set while the worker consumes its shards (tests and the health endpoint wait on it)."""
        self._stop = threading.Event()
        self._metrics_server: MetricsServer | None = None
        self._handled_since_stats = 0
        self._next_eviction = 0.0
        self._next_stats = 0.0

    # -- control -----------------------------------------------------------------------------------------

    def stop(self) -> None:
        """Ask the service to stop; safe from signal handlers and other threads."""
        self._stop.set()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def install_signal_handlers(self) -> None:
        """SIGTERM and SIGINT stop the service gracefully (main thread only)."""
        def handle(signum: int, frame: Any) -> None:
            logger.info("%s received: stopping after answering the states held", signal.Signals(signum).name)
            self.stop()

        signal.signal(signal.SIGTERM, handle)
        signal.signal(signal.SIGINT, handle)

    # -- the loop ----------------------------------------------------------------------------------------

    def run(self) -> None:
        """Serve until ``stop()``. Raises PluginMissing, AccessRefused or TopologyConflict (not retried)."""
        if self.settings.metrics.port:
            self._metrics_server = MetricsServer(self.metrics, self.settings.metrics.host,
                                                 self.settings.metrics.port).start()
        broker = self.settings.broker
        logger.info("maze-worker serving %s, prefix %r, %d shards", mask_url(broker.url), broker.prefix,
                    broker.shards)
        backoff = Backoff(self.settings.reconnect.initial_backoff_s, self.settings.reconnect.max_backoff_s)
        connected_before = False
        now = self.clock()
        self._next_eviction = now + EVICTION_INTERVAL_S
        self._next_stats = now + self.settings.stats_interval_s
        try:
            while not self._stop.is_set():
                try:
                    self._open()
                except (BrokerUnreachable, ConnectionLost) as err:
                    delay = backoff.next_delay()
                    logger.warning("cannot reach the broker (%s); retrying in %.1f s", err, delay)
                    self._housekeeping()
                    self._stop.wait(delay)
                    continue
                if connected_before:
                    self.metrics.reconnects.inc()
                    logger.info("reconnected; %d open episodes kept", len(self.table))
                connected_before = True
                connected_at = self.clock()
                try:
                    self._serve()
                except ConnectionLost as err:
                    self._lost()
                    if self.clock() - connected_at >= self.settings.reconnect.healthy_after_s:
                        backoff.reset()
                    delay = backoff.next_delay()
                    logger.warning("connection lost (%s); reconnecting in %.1f s, %d open episodes kept, "
                                   "unacknowledged states will be redelivered", err, delay, len(self.table))
                    self._stop.wait(delay)
                    continue
                self._drain_and_close()
        finally:
            self._lost()
            self.transport.close()
            if self.reloader is not None:
                self.reloader.close()
            closed = self.table.close_all()
            self._log_stats(final=True, dropped=closed)
            if self._metrics_server is not None:
                self._metrics_server.stop()

    def _open(self) -> None:
        transport = self.transport
        transport.connect()
        transport.declare_topology()
        if self.reloader is not None:  # announcements missed while disconnected: look at the files too
            transport.subscribe_policies(self.reloader.on_announcement)
            self.reloader.check_latest()
        held = self.cluster.connected()
        self.consuming.set()
        self.metrics.set_healthy(True)
        logger.info("worker %s consuming the %d shard queues of prefix %r, owning %d", self.worker_id,
                    self.settings.broker.shards, self.settings.broker.prefix, len(self.cluster.owned))
        if held:
            self.process(self.cluster.admit(held))

    def _lost(self) -> None:
        self.consuming.clear()
        self.metrics.set_healthy(False)
        self.transport.close()
        self.cluster.disconnected()

    def _serve(self) -> None:
        """Answer batches until stop is requested; raises ConnectionLost."""
        transport = self.transport
        cluster = self.cluster
        while not self._stop.is_set():
            deliveries = cluster.admit(transport.poll(POLL_TIMEOUT_S))
            if deliveries:
                self.process(deliveries)
            ready = cluster.tick()
            if ready:  # held back while their episodes were asked for (worker/cluster/claims.py)
                self.process(ready, ack_each=True)
            self._housekeeping()

    def _drain_and_close(self) -> None:
        """Hand over: tell the others, answer for one more heartbeat interval, then hand every shard's
        episodes over (records first, then the consumer); undelivered states stay queued for their owners."""
        self.consuming.clear()
        self.metrics.set_healthy(False)
        cluster = self.cluster
        try:
            others = cluster.announce_leaving()
            # The others hear of it and count this worker out before its shards come free (alone, the
            # records wait in the hand-off queues for the next worker).
            deadline = self.clock() + (self.settings.cluster.heartbeat_interval_s if others else 0.0)
            while True:
                held = cluster.admit(self.transport.poll(0 if self.clock() >= deadline else POLL_TIMEOUT_S))
                if held:
                    self.process(held)
                if self.clock() >= deadline:
                    break
            cluster.leave()
        except ConnectionLost as err:
            logger.warning("connection lost while stopping (%s); unacknowledged states stay queued, the open "
                           "episodes are lost", err)
        self.transport.close()

    # -- batches -----------------------------------------------------------------------------------------

    def process(self, deliveries: Sequence[Delivery], ack_each: bool = False) -> None:
        """Answer ``deliveries`` (in chunks of ``batch.max_size``), publish, acknowledge and flush."""
        size = self.settings.batch.max_size
        for start in range(0, len(deliveries), size):
            self._process_chunk(deliveries[start:start + size], ack_each)

    def _process_chunk(self, chunk: Sequence[Delivery], ack_each: bool) -> None:
        transport = self.transport
        metrics = self.metrics
        table = self.table
        messages: list[StateMessage] = []
        targets: list[Delivery] = []
        codes: list[str] = []
        held: set[int] = set()
        for delivery in chunk:
            if not delivery.reply_to:
                self._dead_letter(delivery, DeadReason.NO_REPLY_TO, "reply_to",
                                  "the message has no reply_to property, so no reply can be sent")
                continue
            try:
                message = decode_state(delivery.body)
            except DecodeError as err:
                if err.field == "body":
                    self._dead_letter(delivery, DeadReason.BAD_MESSAGE, "body", err.message)
                else:
                    self._reply(delivery, error_answer(err.episode, err.seq, ErrorCode.BAD_MESSAGE,
                                                       err.message))
                    codes.append(ErrorCode.BAD_MESSAGE)
                continue
            problem = _property_problem(delivery)
            if problem is not None:
                self._reply(delivery, error_answer(message.episode, message.seq, ErrorCode.BAD_MESSAGE,
                                                   problem))
                codes.append(ErrorCode.BAD_MESSAGE)
                continue
            if message.seq and message.episode not in table and self._hold(delivery, message, messages):
                held.add(delivery.tag)
                continue
            messages.append(message)
            targets.append(delivery)
        if messages:
            answers = table.handle(messages)
            publish = transport.publish_reply
            for delivery, answer in zip(targets, answers, strict=True):
                publish(delivery.reply_to, delivery.correlation_id, answer.body)  # type: ignore[arg-type]
                if answer.code is not None:
                    codes.append(answer.code)
            metrics.batch_size.observe(len(messages))
        if ack_each or self.cluster.claims:  # a multiple ack would cover the held-back deliveries too
            for delivery in chunk:
                if delivery.tag not in held:
                    transport.ack(delivery.tag)
        else:
            transport.ack(chunk[-1].tag, multiple=True)
        # Counted before the flush sends the replies out, so whoever holds a reply finds its state counted.
        done = time.perf_counter()
        answered = [delivery for delivery in chunk if delivery.tag not in held] if held else chunk
        metrics.states.inc(len(answered))
        metrics.observe_latencies(done - delivery.received for delivery in answered)
        if codes:
            metrics.count_errors(codes)
        metrics.open_episodes.set(len(table))
        self._handled_since_stats += len(answered)
        transport.flush()

    def _hold(self, delivery: Delivery, message: StateMessage, earlier: Sequence[StateMessage]) -> bool:
        """Whether the state of an episode not held here waits while the other workers are asked for it
        (not when an earlier state of this chunk opens the episode)."""
        if any(other.episode == message.episode for other in earlier):
            return False
        return self.cluster.hold_for_claim(delivery, message.episode)

    def _reply(self, delivery: Delivery, answer: Answer) -> None:
        self.transport.publish_reply(delivery.reply_to, delivery.correlation_id,  # type: ignore[arg-type]
                                     answer.body)

    def _dead_letter(self, delivery: Delivery, reason: str, field: str, detail: str) -> None:
        logger.warning("dead-lettering a message from %s (routing key %.64r): %s: %s", delivery.queue,
                       delivery.routing_key, reason, detail)
        self.transport.dead_letter(delivery, reason, field, detail)
        self.metrics.dead_letters.labels(reason).inc()

    # -- housekeeping ------------------------------------------------------------------------------------

    def _on_closed(self, closed: ClosedEpisode) -> None:
        self.metrics.episodes_closed.labels(closed.reason.value).inc()
        self.cluster.forget(closed.episode)

    def _swap_policy(self) -> None:
        """Between batches: new episodes get a newly loaded policy version, running ones keep theirs."""
        assert self.reloader is not None
        loaded = self.reloader.take_ready()
        if loaded is not None:
            self.table.set_factory(loaded)

    def _on_policy_released(self, source: Any) -> None:
        logger.info("policy version %s released: its last episode closed",
                    getattr(source, "policy_version", "?"))

    def _housekeeping(self) -> None:
        if self.reloader is not None:
            self._swap_policy()
        now = self.clock()
        if now >= self._next_eviction:
            self._next_eviction = now + EVICTION_INTERVAL_S
            if self.table.evict_idle(now):
                self.metrics.open_episodes.set(len(self.table))
        if self.settings.stats_interval_s and now >= self._next_stats:
            self._next_stats = now + self.settings.stats_interval_s
            self._log_stats()

    def _log_stats(self, final: bool = False, dropped: int = 0) -> None:
        finished = self.table.finished.take()
        handled, self._handled_since_stats = self._handled_since_stats, 0
        if not final and not finished.total and not handled:
            return
        line = stats_line(finished, handled, len(self.table))
        logger.info("%s%s", "final statistics: " if final else "", line)
        if final and dropped:
            logger.info("closed %d open episodes at shutdown (their statistics are included above)", dropped)


def stats_line(finished: FinishedEpisodes, handled: int, open_episodes: int) -> str:
    """One readable line: episodes finished (by why), mean return and length, states handled, open count."""
    reasons = ", ".join(f"{reason} {count}" for reason, count in sorted(finished.by_reason.items()))
    text = f"episodes finished {finished.total}" + (f" ({reasons})" if reasons else "")
    if finished.returns.count:
        returns = finished.returns.summary()
        lengths = finished.lengths.summary()
        text += (f", mean return {returns['mean']:.2f} (min {returns['min']:.2f}, max {returns['max']:.2f}), "
                 f"mean length {lengths['mean']:.1f}")
    return f"{text}; states handled {handled}; open episodes {open_episodes}"


def _property_problem(delivery: Delivery) -> str | None:
    """Why the properties of an answerable message are unusable, or None."""
    if delivery.content_type is not None and delivery.content_type != CONTENT_TYPE:
        return f"content_type: expected {CONTENT_TYPE}, got {delivery.content_type!r}"
    if not delivery.correlation_id:
        return "correlation_id: expected a non-empty string to match the reply to its request, got nothing"
    return None
