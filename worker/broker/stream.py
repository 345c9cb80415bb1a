"""The experience stream on the broker: declare it, publish to it with confirms, read it from an offset.

``<prefix>.experience`` is a RabbitMQ stream (``x-queue-type: stream``), an append-only log with retention
by size and age that any number of readers consume from any offset without removing anything. The worker's
publisher thread holds a ``StreamPublisher`` (its own connection: pika is not thread-safe); ``maze-worker
experience export`` reads with a ``StreamReader``. pika's errors become ``worker.broker.link``'s, plus the
two below that say what happened to a record.
"""

from __future__ import annotations

import datetime
import logging
import time
from collections.abc import Iterator
from typing import Any

import pika
import pika.exceptions
from pika.adapters.blocking_connection import BlockingChannel

from worker.broker.link import BrokerConnectionLost, BrokerLink, TransportError, translated_errors
from worker.settings import BrokerSettings
from worker.wire.protocol import CONTENT_TYPE

logger = logging.getLogger(__name__)

READ_PREFETCH = 500
"""Records a reader lets the broker push ahead (a stream consumer needs a prefetch limit)."""


class StreamMissing(TransportError):
    """The stream is not there (deleted while the worker ran): the broker returned the record."""


class PublishRefused(TransportError):
    """The broker refused the record (a negative publisher confirm)."""


class StreamNotFound(TransportError):
    """A reader asked for a stream that does not exist."""


def stream_arguments(max_bytes: int, max_age: str) -> dict[str, Any]:
    """Declare arguments of the experience stream: a stream, retained up to ``max_bytes`` and ``max_age``."""
    return {"x-queue-type": "stream", "x-max-length-bytes": max_bytes, "x-max-age": max_age}


def offset_argument(start: str) -> Any:
    """``--from`` as the ``x-stream-offset`` consumer argument: ``first``, ``last``, ``next``, an offset
    (integer) or an ISO 8601 time (records published from then on); ValueError names what it expected."""
    if start in ("first", "last", "next"):
        return start
    if start.isdigit():
        return int(start)
    try:
        moment = datetime.datetime.fromisoformat(start)
    except ValueError:
        raise ValueError(f"--from: expected first, last, next, an offset (integer >= 0) or an ISO 8601 time "
                         f"such as 2026-05-01T10:00:00+00:00, got {start!r}") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=datetime.UTC)
    return moment


class StreamPublisher(BrokerLink):
    """One connection and a confirming channel that declares the stream and publishes records to it."""

    def __init__(self, settings: BrokerSettings, connection_name: str) -> None:
        super().__init__(settings, connection_name)

    def _opened(self, channel: BlockingChannel) -> None:
        channel.confirm_delivery()

    def declare_stream(self, name: str, arguments: dict[str, Any]) -> None:
        """Declare the stream (idempotent); TopologyConflict when it exists with other arguments or as
        another kind of queue, AccessRefused when the user may not."""
        channel = self._require_channel()
        with self._waiting(f"declaring the experience stream {name}"):
            channel.queue_declare(name, durable=True, arguments=arguments)

    def publish(self, name: str, body: bytes) -> None:
        """Publish one record and wait for the broker's confirm; StreamMissing when nothing took it,
        PublishRefused when the broker said no, BrokerConnectionLost when the connection broke."""
        channel = self._require_channel()
        properties = pika.BasicProperties(content_type=CONTENT_TYPE, delivery_mode=2,
                                          timestamp=int(time.time()))
        with self._waiting(f"publishing a record to {name}"):
            try:
                channel.basic_publish("", name, body, properties, mandatory=True)
            except pika.exceptions.UnroutableError as err:
                raise StreamMissing(f"the experience stream {name} does not exist (deleted?); the broker "
                                    f"returned the record") from err
            except pika.exceptions.NackError as err:
                raise PublishRefused(f"the broker refused a record for {name} (negative confirm)") from err


    def keep_alive(self) -> None:
        """Answer the broker's heartbeats while no record comes (BrokerConnectionLost when it is gone)."""
        connection = self._connection
        if connection is None:
            raise BrokerConnectionLost("not connected")
        with self._waiting("keeping the experience connection alive"):
            connection.process_data_events(time_limit=0)


class StreamReader(BrokerLink):
    """Reads a stream from an offset until it has been quiet for a while."""

    def __init__(self, settings: BrokerSettings, connection_name: str) -> None:
        super().__init__(settings, connection_name)
        self._received: list[tuple[int, bytes, int]] = []

    def exists(self, name: str) -> bool:
        """Whether stream ``name`` exists (a passive declare; the channel is reopened after a 404)."""
        channel = self._require_channel()
        try:
            with translated_errors(f"looking for {name}"):
                try:
                    channel.queue_declare(name, passive=True)
                except pika.exceptions.ChannelClosedByBroker as err:
                    if err.reply_code == 404:
                        return False
                    raise
        finally:
            if not channel.is_open and self._connection is not None:
                self._channel = self._connection.channel()
        return True

    def read(self, name: str, offset: Any, idle_s: float = 1.0) -> Iterator[tuple[int, bytes]]:
        """``(offset, body)`` of each record from ``offset`` on, until none came for ``idle_s`` seconds."""
        channel = self._require_channel()
        connection = self._connection
        assert connection is not None
        with translated_errors(f"reading {name}"):
            channel.basic_qos(prefetch_count=READ_PREFETCH)
            channel.basic_consume(name, self._on_record, auto_ack=False,
                                  arguments={"x-stream-offset": offset})
        quiet_since = time.monotonic()
        while time.monotonic() - quiet_since < idle_s:
            with translated_errors(f"reading {name}"):
                connection.process_data_events(time_limit=min(0.1, idle_s))
            if not self._received:
                continue
            received, self._received = self._received, []
            with translated_errors(f"acknowledging records of {name}"):
                channel.basic_ack(received[-1][2], multiple=True)  # keeps the broker pushing
            for record_offset, body, _tag in received:
                yield record_offset, body
            quiet_since = time.monotonic()

    def _on_record(self, channel: Any, method: Any, properties: Any, body: bytes) -> None:
        headers = properties.headers or {}
        self._received.append((int(headers.get("x-stream-offset", -1)), body, method.delivery_tag))
