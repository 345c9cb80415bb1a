"""Jobs from Python: ``JobClient`` submits and cancels jobs, follows their events, waits for their results.

    with JobClient(prefix="maze") as client:
        job = new_job("cartpole-a2c-1", "train", ["env.name=CartPole-v1", "algorithm.n_epochs=5"])
        client.watch(job.job_id)                           # events from now on
        client.submit(job)
        result = client.wait(job.job_id, timeout=3600, on_event=print)

A client owns one AMQP connection and is not thread-safe. The message format is in docs/protocol.md ("Jobs");
the ``maze-worker submit`` and ``maze-worker jobs`` commands (``worker.jobs.submit``) are built on it.
"""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pika
import pika.exceptions

from worker.broker.deadline import close_within, deadline
from worker.client import connection
from worker.client.errors import JobClientError
from worker.jobs.codec import JobDecodeError, decode_event, decode_result, encode_control, encode_job
from worker.jobs.schema import ControlMessage, JobMessage, JobResult
from worker.wire import topology

CONTENT_TYPE = "application/msgpack"

__all__ = ["JobClient", "JobClientError"]


class JobClient:
    """Submit jobs, follow their events, wait for their results, cancel them; see the module docstring.

    ``timeout`` bounds every blocking call: connecting and setting up (JobClientError after it), each
    publish and declare (a broker that does not answer is left, its connection dropped, JobClientError), and
    ``close`` (at most ``min(timeout, 5 s)``); ``wait`` and ``poll`` take their own timeout.
    """

    def __init__(self, url: str | None = None, prefix: str = topology.DEFAULT_PREFIX,
                 timeout: float = 10.0) -> None:
        if not isinstance(timeout, int | float) or isinstance(timeout, bool) or not timeout > 0:
            raise ValueError(f"timeout: expected a positive number of seconds, got {timeout!r}")
        self.prefix = prefix
        self.url = topology.amqp_url(url)
        self.timeout = float(timeout)
        self.results: dict[str, JobResult] = {}
        self.events: list[dict[str, Any]] = []
        self._events_queue: str | None = None
        where = topology.mask_url(self.url)
        try:
            parameters = connection.parameters(self.url, f"maze-job-client {uuid.uuid4().hex[:12]}",
                                               self.timeout)
        except ValueError as err:  # from None: the URL parser's message may quote the password
            raise JobClientError(f"url: expected an amqp:// or amqps:// URL, got {where} "
                                 f"({connection.scrub(str(err), self.url)})") from None
        try:
            self.connection = pika.BlockingConnection(parameters)
        except connection.CONNECT_ERRORS as err:
            raise JobClientError(f"cannot connect to {where} within {self.timeout:g} s: "
                                 f"{connection.describe(err, self.url)}") from err
        try:
            with self._bounded(f"setting up the client on {where}"):
                self.channel = self.connection.channel()
                self.channel.confirm_delivery()
                self.reply_queue = self.channel.queue_declare("", exclusive=True).method.queue
                self.channel.basic_consume(self.reply_queue, self._on_reply, auto_ack=True)
        except BaseException:
            self.close()
            raise

    def __enter__(self) -> JobClient:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        """Close the connection within ``min(timeout, 5 s)``, answered or not; never raises."""
        opened = getattr(self, "connection", None)
        if opened is not None:
            close_within(opened, min(self.timeout, connection.CLOSE_TIMEOUT_S))

    @contextlib.contextmanager
    def _bounded(self, action: str, extra_s: float = 0.0,
                 explained: tuple[type[Exception], ...] = ()) -> Iterator[None]:
        """Give the broker ``timeout + extra_s`` seconds to answer ``action``; turn what pika raises into
        JobClientError, except the ``explained`` errors, which the caller translates with a better message."""
        try:
            with deadline(self.connection, self.timeout + extra_s, action):
                yield
        except explained:
            raise
        except connection.CONNECT_ERRORS as err:
            raise JobClientError(f"{action} failed: {connection.describe(err, self.url)}") from err

    def _on_reply(self, channel: Any, method: Any, properties: Any, body: bytes) -> None:
        try:
            result = decode_result(body)
        except JobDecodeError:
            return
        self.results[result.job_id] = result

    def _on_event(self, channel: Any, method: Any, properties: Any, body: bytes) -> None:
        with contextlib.suppress(JobDecodeError):
            self.events.append(decode_event(body))

    def watch(self, job_id: str) -> None:
        """Receive the events of ``job_id`` (call before ``submit`` to see them all)."""
        exchange = topology.events_exchange(self.prefix)
        try:
            with self._bounded(f"following the events of {job_id}",
                               explained=(pika.exceptions.ChannelClosedByBroker,)):
                if self._events_queue is None:
                    self._events_queue = self.channel.queue_declare("", exclusive=True).method.queue
                    self.channel.basic_consume(self._events_queue, self._on_event, auto_ack=True)
                self.channel.queue_bind(self._events_queue, exchange, routing_key=f"job.{job_id}.*")
        except pika.exceptions.ChannelClosedByBroker as err:
            raise JobClientError(f"cannot follow job events on {exchange} ({err.reply_text}); start a job "
                                 f"worker for prefix {self.prefix!r} first") from err

    def submit(self, job: JobMessage) -> str:
        """Publish ``job`` to its queue (persistent, confirmed); returns its job id."""
        properties = pika.BasicProperties(content_type=CONTENT_TYPE, delivery_mode=2,
                                          reply_to=self.reply_queue, correlation_id=job.job_id)
        queue = topology.jobs_queue(self.prefix, job.kind)
        try:
            with self._bounded(f"submitting {job.job_id}", explained=(pika.exceptions.UnroutableError,)):
                self.channel.basic_publish("", queue, encode_job(job), properties, mandatory=True)
        except pika.exceptions.UnroutableError as err:
            raise JobClientError(f"no queue {queue}: no job worker has declared it yet; start "
                                 f"`maze-worker role=jobs broker.prefix={self.prefix}`") from err
        return job.job_id

    def cancel(self, job_id: str, reason: str = "") -> None:
        """Ask every job worker to cancel ``job_id`` (queued or running)."""
        body = encode_control(ControlMessage("cancel", job_id, reason or "cancelled by request"))
        exchange = topology.control_exchange(self.prefix)
        explained = (pika.exceptions.UnroutableError, pika.exceptions.ChannelClosedByBroker)
        properties = pika.BasicProperties(content_type=CONTENT_TYPE)
        try:
            with self._bounded(f"cancelling {job_id}", explained=explained):
                self.channel.basic_publish(exchange, "", body, properties, mandatory=True)
        except pika.exceptions.UnroutableError as err:
            raise JobClientError("no job worker is listening on the control exchange; the cancellation "
                                 "was not delivered") from err
        except pika.exceptions.ChannelClosedByBroker as err:
            raise JobClientError(f"cannot publish to {exchange} ({err.reply_text}); start a job worker "
                                 f"first") from err

    def consumers(self, kind: str) -> int:
        """How many job workers consume the queue of ``kind`` jobs now (0 when the queue does not exist)."""
        queue = topology.jobs_queue(self.prefix, kind)
        channel = None
        try:
            with self._bounded(f"looking at {queue}", explained=(pika.exceptions.ChannelClosedByBroker,)):
                channel = self.connection.channel()  # a passive declare of a missing queue closes its channel
                return int(channel.queue_declare(queue, passive=True).method.consumer_count)
        except pika.exceptions.ChannelClosedByBroker:
            return 0
        finally:
            if channel is not None and channel.is_open:
                with contextlib.suppress(Exception):
                    channel.close()

    def poll(self, timeout: float = 0.1) -> None:
        """Receive what has arrived (results and events) for up to ``timeout`` seconds."""
        with self._bounded("receiving results and events", extra_s=timeout):
            self.connection.process_data_events(time_limit=timeout)

    def wait(self, job_id: str, timeout: float = 3600.0,
             on_event: Callable[[dict[str, Any]], None] | None = None,
             on_tick: Callable[[], None] | None = None) -> JobResult:
        """Block until the result of ``job_id`` arrives; ``on_event`` sees each event, ``on_tick`` is called
        about ten times a second (JobClientError)."""
        until = time.monotonic() + timeout
        while job_id not in self.results:
            if time.monotonic() > until:
                raise JobClientError(f"no result for job {job_id} within {timeout:g} s")
            self.poll(0.1)
            if on_tick is not None:
                on_tick()
            events, self.events = self.events, []
            if on_event is not None:
                for event in events:
                    on_event(event)
        return self.results.pop(job_id)
