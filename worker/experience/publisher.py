"""The publisher thread: chunks from the reply path to the experience stream, never the other way round.

The serving thread only ``offer``s chunks: a non-blocking put on a bounded queue (``experience.backlog``).
When the queue is full the chunk is dropped and counted; serving never waits for the broker. The thread has
its own connection (pika is not thread-safe), stacks and encodes each chunk, publishes it with a publisher
confirm, and counts it. A stream that is missing, refused or unreachable costs records, not replies: each
failure is logged once per ``LOG_EVERY_S`` with what to do, the record is counted as dropped, and the
thread reconnects with backoff (declaring the stream again, so a deleted stream comes back).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable

from worker.broker.backoff import Backoff
from worker.broker.link import AccessRefused, TopologyConflict, TransportError
from worker.broker.stream import PublishRefused, StreamMissing, StreamPublisher, stream_arguments
from worker.experience.buffer import Chunk
from worker.experience.record import RecordError, encode_record
from worker.metrics import WorkerMetrics
from worker.settings import BrokerSettings, ExperienceSettings
from worker.wire import topology

logger = logging.getLogger(__name__)

LOG_EVERY_S = 30.0
"""A repeated failure is logged again after this long (with the count dropped meanwhile)."""
DRAIN_TIMEOUT_S = 5.0
"""At shutdown, how long the thread may go on publishing what is queued."""


class ExperiencePublisher:
    """A daemon thread publishing offered chunks to ``<prefix>.experience``; ``close`` drains and stops."""

    def __init__(self, broker: BrokerSettings, settings: ExperienceSettings, worker_id: str, policy_name: str,
                 mode: str, metrics: WorkerMetrics,
                 link_factory: Callable[[BrokerSettings, str], StreamPublisher] = StreamPublisher) -> None:
        self.broker = broker
        self.settings = settings
        self.worker_id, self.policy_name, self.mode = worker_id, policy_name, mode
        self.metrics = metrics
        self.stream = topology.experience_stream(broker.prefix)
        self._link_factory = link_factory
        self._queue: queue.Queue[Chunk] = queue.Queue(maxsize=settings.backlog)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="maze-worker-experience", daemon=True)
        self._down = "unreachable"
        """Why the stream cannot be had (``refused`` or ``unreachable``): the reason records are dropped."""
        self._last_log: dict[str, float] = {}
        self._dropped_since_log: dict[str, int] = {}
        self.ready = threading.Event()
        """Set once the stream is declared (tests wait on it)."""

    # -- the serving thread's side -------------------------------------------------------------------------

    def offer(self, chunk: Chunk) -> None:
        """Queue ``chunk`` for publishing, or drop (and count) it when the backlog is full; never blocks."""
        try:
            self._queue.put_nowait(chunk)
        except queue.Full:
            self._dropped("backlog_full", f"the backlog of {self.settings.backlog} records is full (the "
                                          f"stream {self.stream} is slow or unreachable)")
        self.metrics.experience_backlog.set(self._queue.qsize())

    def start(self) -> ExperiencePublisher:
        self._thread.start()
        return self

    def close(self, timeout: float = DRAIN_TIMEOUT_S) -> None:
        """Publish what is queued (for at most ``timeout`` seconds), then stop; the rest counts as dropped."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout + 1.0)
        left = self._queue.qsize()
        if left:
            self.metrics.experience_dropped.labels("shutdown").inc(left)
            logger.warning("%d experience records were not published before the worker stopped", left)

    # -- the thread ----------------------------------------------------------------------------------------

    def _run(self) -> None:
        backoff = Backoff(0.5, 30.0)
        link = self._connect()  # at start: a stream that cannot be declared is logged before any record
        retry_at = 0.0 if link is not None else time.monotonic() + backoff.next_delay()
        stop_by: float | None = None
        while True:
            if self._stop.is_set():
                stop_by = stop_by or time.monotonic() + DRAIN_TIMEOUT_S
                if self._queue.empty() or time.monotonic() >= stop_by:
                    break
            try:
                chunk = self._queue.get(timeout=0.2)
            except queue.Empty:
                link = self._keep_alive(link)
                continue
            self.metrics.experience_backlog.set(self._queue.qsize())
            if link is None and time.monotonic() >= retry_at:
                link = self._connect()
                if link is None:
                    retry_at = time.monotonic() + backoff.next_delay()
            if link is None:
                what = "declared" if self._down == "refused" else "reached"
                self._dropped(self._down, f"the experience stream {self.stream} cannot be {what} (see above)")
                continue
            link = self._send(link, chunk)
            if link is None:
                retry_at = time.monotonic() + backoff.next_delay()
            else:
                backoff.reset()
        if link is not None:
            link.close()

    def _keep_alive(self, link: StreamPublisher | None) -> StreamPublisher | None:
        """While idle: answer the broker's heartbeats (else it closes a quiet connection)."""
        if link is None:
            return None
        try:
            link.keep_alive()
        except TransportError:
            link.close()
            return None
        return link

    def _connect(self) -> StreamPublisher | None:
        link = self._link_factory(self.broker, f"maze-worker experience {self.worker_id}")
        try:
            link.connect()
            link.declare_stream(self.stream, stream_arguments(self.settings.max_bytes, self.settings.max_age))
        except (TopologyConflict, AccessRefused) as err:
            self._down = "refused"
            self._log("refused", logging.ERROR, f"the experience stream {self.stream} cannot be declared "
                      f"({err}); experience records are dropped (maze_worker_experience_records_dropped_"
                      f"total) until it can: delete the queue or fix the permissions; serving goes on")
        except TransportError as err:
            self._down = "unreachable"
            self._log("unreachable", logging.WARNING, f"cannot reach the broker for the experience stream "
                      f"{self.stream} ({err}); records are dropped until it answers, serving goes on")
        else:
            self.ready.set()
            return link
        link.close()
        return None

    def _send(self, link: StreamPublisher, chunk: Chunk) -> StreamPublisher | None:
        """Publish one chunk; the link to go on with (None: open one later). A broken connection gets one
        fresh connection at once, so a connection the broker dropped costs no record."""
        try:
            body = encode_record(chunk.record(self.worker_id, self.policy_name, self.mode, time.time()))
        except (RecordError, ValueError, TypeError) as err:
            self._dropped("unencodable", f"episode {chunk.episode}: the record cannot be encoded ({err})")
            return link
        for attempt in (1, 2):
            try:
                link.publish(self.stream, body)
            except StreamMissing as err:
                self._dropped("stream_missing", f"{err}; it is declared again on the next record")
                link.close()
                return None
            except PublishRefused as err:
                self._dropped("refused", str(err))
                return link
            except TransportError as err:
                link.close()
                fresh = self._connect() if attempt == 1 else None
                if fresh is None:
                    self._dropped("unreachable", f"publishing to {self.stream} failed ({err}); reconnecting")
                    return None
                link = fresh
                continue
            self.metrics.experience_records.inc()
            self.metrics.experience_steps.inc(chunk.steps)
            return link
        return None

    def _dropped(self, reason: str, detail: str) -> None:
        self.metrics.experience_dropped.labels(reason).inc()
        self._dropped_since_log[reason] = self._dropped_since_log.get(reason, 0) + 1
        self._log(reason, logging.WARNING, f"experience record dropped: {detail}")

    def _log(self, reason: str, level: int, message: str) -> None:
        """Log ``message`` unless the same reason was logged within ``LOG_EVERY_S``."""
        now = time.monotonic()
        if now - self._last_log.get(reason, -LOG_EVERY_S) < LOG_EVERY_S:
            return
        self._last_log[reason] = now
        dropped = self._dropped_since_log.pop(reason, 0)
        logger.log(level, "%s%s", message, f" ({dropped} dropped for this reason since the last such line)"
                   if dropped > 1 else "")
