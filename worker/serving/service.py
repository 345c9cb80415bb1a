"""The worker service: connect, consume the owned shards, answer batches of states, reconnect, stop cleanly.

One thread does everything (pika's BlockingConnection is not thread-safe). The path of a batch, top to bottom:

1. ``poll``: the transport waits for the first delivery and drains what else has arrived;
2. ``admit``: the cluster keeps the deliveries of shards this worker owns (``worker/cluster/``);
3. ``decode``: ``worker/serving/admission.py`` turns deliveries into states, answering or dead-lettering
   what cannot be used, and holding back states of episodes another worker holds;
4. ``table``: the EpisodeTable steps the states' deployments together (``worker/episodes/``);
5. ``reply``: one encoded reply per state to its ``reply_to``;
6. ``ack``: one ``multiple`` ack after the replies, and one flush sends both.

A lost connection is re-opened with capped exponential backoff; open episodes are kept, and the broker
redelivers what was not acknowledged (the table answers those from its replay window). ``stop()`` (SIGTERM,
SIGINT) stops consuming, answers what the worker holds, hands its episodes over and closes. No message can
stop the loop: whatever fails while handling one state is answered ``internal`` for that state.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from worker.broker.agent_transport import BrokerConnectionLost, BrokerUnreachable, Delivery, Transport
from worker.broker.backoff import Backoff
from worker.cluster.coordinator import ShardCoordinator
from worker.cluster.episode_shards import EpisodeShards
from worker.cluster.membership import new_worker_id
from worker.episodes.answers import Answer, brief, error_answer
from worker.episodes.closing import ClosedEpisode, CloseReason, FinishedEpisodes
from worker.episodes.shadow_candidate import Shadowing
from worker.episodes.sources import DeploymentSource, version_of
from worker.episodes.table import EpisodeTable
from worker.metrics import MetricsServer, WorkerMetrics
from worker.policy_store.fleet import ReleaseFollower
from worker.policy_store.reload import PolicyReloader, PolicyReloadMetrics
from worker.policy_store.versioned import VersionedFactory
from worker.serving.admission import DeadLetter, admit
from worker.serving.candidate_figures import CandidateFigures
from worker.serving.recording import build_recording, description
from worker.serving.stats import stats_line
from worker.settings import WorkerSettings
from worker.signals import stop_on_signals
from worker.wire.protocol import ErrorCode, StateMessage
from worker.wire.replies import encode_describe_reply
from worker.wire.topology import mask_url

logger = logging.getLogger(__name__)

POLL_TIMEOUT_S = 0.2
"""Longest wait for a delivery; bounds how late stop requests, eviction and statistics are noticed."""
EVICTION_INTERVAL_S = 1.0


class WorkerService:
    """Serves one prefix's shard queues until ``stop()``; see the module docstring."""

    def __init__(self, settings: WorkerSettings, factory: DeploymentSource,
                 metrics: WorkerMetrics | None = None, transport: Transport | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.settings = settings
        self.metrics = metrics or WorkerMetrics()
        self.transport = transport or Transport(settings.broker)
        self.clock = clock
        self.worker_id = new_worker_id()
        """This worker's id among the agent workers of its prefix (heartbeats, the ``worker`` reply key)."""
        versioned = factory if isinstance(factory, VersionedFactory) else None
        self.reloader: PolicyReloader | None = None
        """Loads newer versions of a published policy (``policy=published_policy``), else None."""
        if versioned is not None and versioned.follows_latest:
            self.reloader = PolicyReloader(versioned, PolicyReloadMetrics(self.metrics.registry))
        episode_shards = EpisodeShards()
        self.candidates = None if self.reloader is None else CandidateFigures(self.metrics.registry)
        """The shadow candidate's live figures (a release of a published policy can run one)."""
        shadowing = None if self.candidates is None else Shadowing(
            settings.deterministic, self.candidates.count, self.candidates.finished)
        recording, self.experience = build_recording(settings, factory, self.worker_id, self.metrics)
        """Applied actions, shadow mode and (``experience.record``) the publisher thread of experience."""
        self.table = EpisodeTable(
            factory, settings.episodes, settings.deterministic, clock=clock, on_closed=self._on_closed,
            worker_id=self.worker_id, lost_check=episode_shards.explains_loss,
            version_source=versioned.at_version if versioned is not None else None,
            on_released=self._on_policy_released if self.reloader is not None else None, recording=recording,
            shadowing=shadowing)
        self.cluster = ShardCoordinator(settings, self.worker_id, self.transport, self.table, self.metrics,
                                        episode_shards, clock)
        self.releases = None if self.reloader is None else ReleaseFollower(
            self.reloader, self.table.sources.serve, settings.broker.prefix, self.worker_id)
        """Serves reloaded versions and release plans (a canary beside the stable), runs the canary gate."""
        self.consuming = threading.Event()
        """Set while the worker consumes its shards (tests and the health endpoint wait on it)."""
        self._stop = threading.Event()
        self._metrics_server: MetricsServer | None = None
        self._handled_since_stats = 0
        self._run_finished = FinishedEpisodes()
        self._run_handled = 0
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
        stop_on_signals(self.stop)

    # -- the loop ----------------------------------------------------------------------------------------

    def run(self) -> None:
        """Serve until ``stop()``. Raises PluginMissing, AccessRefused or TopologyConflict (not retried)."""
        if self.settings.metrics.port:
            self._metrics_server = MetricsServer(self.metrics, self.settings.metrics.host,
                                                 self.settings.metrics.port).start()
        broker = self.settings.broker
        logger.info("maze-worker serving %s, prefix %r, %d shards", mask_url(broker.url), broker.prefix,
                    broker.shards)
        if self.settings.serving.mode == "shadow":
            logger.info("shadow mode: producers act with their own controller; proposals are compared with "
                        "their applied_action (maze_worker_shadow_agreement)")
        if self.experience is not None:
            logger.info("recording %g of the episodes to the stream %s", self.settings.experience.sample,
                        self.experience.stream)
            self.experience.start()
        backoff = Backoff(self.settings.reconnect.initial_backoff_s, self.settings.reconnect.max_backoff_s)
        connected_before = False
        now = self.clock()
        self._next_eviction = now + EVICTION_INTERVAL_S
        self._next_stats = now + self.settings.stats_interval_s
        try:
            while not self._stop.is_set():
                try:
                    self._open()
                except (BrokerUnreachable, BrokerConnectionLost) as err:
                    delay = backoff.next_delay()
                    logger.warning("cannot reach the broker (%s); retrying in %.1f s", err, delay)
                    self._lost()
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
                except BrokerConnectionLost as err:
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
            if self.experience is not None:  # after close_all: the closed episodes' last records go too
                self.experience.close()
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
        """Answer batches until stop is requested; raises BrokerConnectionLost."""
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
        except BrokerConnectionLost as err:
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
        admitted = admit(chunk, self.table.__contains__, self.cluster.hold_for_claim, self._describe)
        for dead in admitted.dead:
            self._dead_letter(dead)
        publish = transport.publish_reply
        codes: list[str] = []
        for delivery, answer in admitted.answers:
            publish(delivery.reply_to, delivery.correlation_id, answer.body)  # type: ignore[arg-type]
            codes.append(answer.code)  # type: ignore[arg-type]
        if admitted.messages:
            versions = self._versions(admitted.messages)
            answers = self._answer(admitted.messages)
            for delivery, answer in zip(admitted.targets, answers, strict=True):
                publish(delivery.reply_to, delivery.correlation_id, answer.body)  # type: ignore[arg-type]
                if answer.code is not None:
                    codes.append(answer.code)
            metrics.batch_size.observe(len(admitted.messages))
        held = admitted.held
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
        if admitted.messages:  # per policy version: the canary's figures beside the stable's
            metrics.observe_version_latencies(versions, [done - item.received for item in admitted.targets])
            if len(codes) > len(admitted.answers):
                metrics.count_version_errors(versions, [answer.code for answer in answers])
        metrics.open_episodes.set(len(self.table))
        self._handled_since_stats += len(answered)
        transport.flush()

    def _answer(self, messages: list[StateMessage]) -> list[Answer]:
        """The table's answers; should the table itself fail, each state is tried alone, and a state that
        still fails is answered ``internal`` (the worker never dies of a message)."""
        try:
            return self.table.handle(messages)
        except Exception:  # noqa: BLE001 - a bug reached by one state must not cost the batch or the worker
            logger.exception("answering a batch of %d states failed; answering them one by one",
                             len(messages))
        answers: list[Answer] = []
        for message in messages:
            try:
                answers.extend(self.table.handle([message]))
            except Exception as err:  # noqa: BLE001 - see above
                logger.exception("episode %s, seq %d: answering failed", message.episode, message.seq)
                answers.append(error_answer(message.episode, message.seq, ErrorCode.INTERNAL,
                                            f"the worker failed on this state ({brief(err)})"))
        return answers

    def _describe(self) -> bytes:
        """The answer to a describe request: the spaces, the serving mode and the current policy."""
        return encode_describe_reply(description(self.settings, self.table.recording.spaces,
                                                 self.table.factory, self.worker_id), self.worker_id)

    def _dead_letter(self, dead: DeadLetter) -> None:
        delivery = dead.delivery
        logger.warning("dead-lettering a message from %s (routing key %.64r): %s: %s", delivery.queue,
                       delivery.routing_key, dead.reason, dead.detail)
        self.transport.dead_letter(delivery, dead.reason, dead.field, dead.detail)
        self.metrics.dead_letters.labels(dead.reason).inc()

    # -- housekeeping ------------------------------------------------------------------------------------

    def _on_closed(self, closed: ClosedEpisode) -> None:
        self.metrics.episodes_closed.labels(closed.reason.value).inc()
        self.cluster.forget(closed.episode)
        stats = closed.stats
        if closed.reason is CloseReason.DONE and stats is not None and stats.episode_length > 0:
            self.metrics.count_episode(closed.policy_version, stats.episode_return, stats.episode_length)
            if self.releases is not None:
                self.releases.on_closed(closed.policy_version, stats.episode_return)

    def _versions(self, messages: Sequence[StateMessage]) -> list[int | None]:
        """The policy version acting for each state's episode (looked up before closing ones are gone)."""
        sources = self.table.sources
        if not sources.mixed:
            return [version_of(sources.current)] * len(messages)
        version = self.table.policy_version_of
        return [version(message.episode) for message in messages]

    def _swap_policy(self) -> None:
        """Between batches: new episodes get a newly loaded policy version or release plan (running ones keep
        theirs); the canary gate's decisions go out."""
        assert self.releases is not None
        self.releases.tick()
        notices = self.releases.notices
        try:
            while notices:
                notice = notices[0]
                self.transport.publish_notice(notice.exchange, notice.exchange_type, notice.routing_key,
                                              notice.body)
                notices.pop(0)
        except BrokerConnectionLost as err:  # sent after the reconnect; the release state is written already
            logger.warning("publishing a release decision failed (%s); it goes out after reconnecting", err)

    def _on_policy_released(self, source: Any) -> None:
        logger.info("policy version %s released: its last episode closed",
                    getattr(source, "policy_version", "?"))

    def _housekeeping(self) -> None:
        if self.reloader is not None:
            self._swap_policy()
        now = self.clock()
        if self.candidates is not None:
            self.candidates.refresh(now)
        if now >= self._next_eviction:
            self._next_eviction = now + EVICTION_INTERVAL_S
            if self.table.evict_idle(now):
                self.metrics.open_episodes.set(len(self.table))
        if self.settings.stats_interval_s and now >= self._next_stats:
            self._next_stats = now + self.settings.stats_interval_s
            self._log_stats()

    def _log_stats(self, final: bool = False, dropped: int = 0) -> None:
        """The interval's statistics line; at the end, the whole run's."""
        finished = self.table.finished.take()
        handled, self._handled_since_stats = self._handled_since_stats, 0
        self._run_finished.merge(finished)
        self._run_handled += handled
        if final:
            logger.info("final statistics of the whole run: %s",
                        stats_line(self._run_finished, self._run_handled, len(self.table)))
        elif finished.total or handled:
            logger.info("%s", stats_line(finished, handled, len(self.table)))
        if final and dropped:
            logger.info("closed %d open episodes at shutdown (their statistics are included above)", dropped)
