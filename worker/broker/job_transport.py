"""The job worker's contact with pika: take one job at a time, publish with confirms, events and replies.

Like ``worker.broker.agent_transport`` (both build on ``worker.broker.link``), pika's exceptions never
leave this module, and no call waits for the broker longer than ``ANSWER_TIMEOUT_S``.
One blocking connection, one channel in confirm mode: the lease copy, requeued jobs and chunk jobs are
confirmed by the broker before the job worker goes on (``publish_confirmed``); events and replies use the same
channel. Jobs are taken with ``basic.get``, one at a time: while a job runs the worker holds no other
delivery, which is what prefetch 1 asks for, without a consumer that the broker would hand the next job to as
soon as the running job's original delivery is acknowledged (see the lease in docs/jobs.md).
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pika
import pika.exceptions
from pika.adapters.blocking_connection import BlockingChannel

from worker.broker.link import BrokerConnectionLost, BrokerLink, TransportError
from worker.settings import BrokerSettings
from worker.wire import topology

logger = logging.getLogger(__name__)

CONTENT_TYPE = "application/msgpack"


class PublishRefused(TransportError):
    """The broker did not confirm a message (nack, or unroutable with ``mandatory``)."""


@dataclass(slots=True)
class JobDelivery:
    """A job message as ``basic.get`` handed it over."""

    tag: int
    body: bytes
    queue: str
    reply_to: str | None
    correlation_id: str | None
    headers: dict[str, Any]
    redelivered: bool
    properties: Any


class JobTransport(BrokerLink):
    """A blocking connection with one confirm-mode channel; see the module docstring."""

    def __init__(self, settings: BrokerSettings, connection_name: str | None = None) -> None:
        super().__init__(settings, connection_name
                         or f"maze-job-worker {settings.prefix} {socket.gethostname()}:{os.getpid()}")
        self._control: list[bytes] = []

    # -- connection ------------------------------------------------------------------------------------

    def _opened(self, channel: BlockingChannel) -> None:
        channel.confirm_delivery()

    def _forget(self) -> None:
        self._control.clear()

    def declare_lease_queue(self, name: str, arguments: dict[str, Any]) -> None:
        channel = self._require_channel()
        with self._waiting(f"declaring the lease queue {name}"):
            channel.queue_declare(name, durable=True, arguments=arguments)

    def listen_control(self, exchange: str) -> None:
        """Bind an exclusive, auto-delete queue to the control exchange; messages arrive during ``wait``."""
        channel = self._require_channel()
        with self._waiting("subscribing to control messages"):
            queue = channel.queue_declare("", exclusive=True, auto_delete=True).method.queue
            channel.queue_bind(queue, exchange)
            channel.basic_consume(queue, self._on_control, auto_ack=True)

    def _on_control(self, channel: Any, method: Any, properties: Any, body: bytes) -> None:
        self._control.append(body)

    def wait(self, timeout: float) -> list[bytes]:
        """Serve the connection (heartbeats, confirms) up to ``timeout`` s; returns the control messages."""
        connection = self._connection
        if connection is None:
            raise BrokerConnectionLost("not connected")
        with self._waiting("receiving", extra_s=timeout):
            connection.process_data_events(time_limit=timeout)
        messages, self._control = self._control, []
        return messages

    # -- jobs ------------------------------------------------------------------------------------------

    def get(self, queue: str) -> JobDelivery | None:
        """Take the next job of ``queue`` (unacknowledged), or None when it is empty."""
        channel = self._require_channel()
        with self._waiting(f"taking a job from {queue}"):
            method, properties, body = channel.basic_get(queue, auto_ack=False)
        if method is None:
            return None
        return JobDelivery(tag=method.delivery_tag, body=body, queue=queue, reply_to=properties.reply_to,
                           correlation_id=properties.correlation_id, headers=dict(properties.headers or {}),
                           redelivered=bool(method.redelivered), properties=properties)

    def ack(self, tag: int) -> None:
        channel = self._require_channel()
        with self._waiting("acknowledging"):
            channel.basic_ack(delivery_tag=tag)

    def publish_confirmed(self, exchange: str, routing_key: str, body: bytes,
                          headers: dict[str, Any] | None = None,
                          reply_to: str | None = None, correlation_id: str | None = None) -> None:
        """Publish a persistent message and wait for the broker's confirm; raises PublishRefused."""
        channel = self._require_channel()
        properties = pika.BasicProperties(content_type=CONTENT_TYPE, delivery_mode=2, headers=headers or None,
                                          reply_to=reply_to, correlation_id=correlation_id)
        try:
            with self._waiting(f"publishing to {exchange or routing_key}"):
                channel.basic_publish(exchange, routing_key, body, properties, mandatory=True)
        except BrokerConnectionLost as err:
            if isinstance(err.__cause__, pika.exceptions.UnroutableError | pika.exceptions.NackError):
                raise PublishRefused(f"the broker did not take the message for {exchange or routing_key} "
                                     f"({type(err.__cause__).__name__})") from err
            raise

    def publish(self, exchange: str, routing_key: str, body: bytes,
                correlation_id: str | None = None) -> None:
        """Publish a transient message (events, replies); confirmed too (the channel is in confirm mode)."""
        channel = self._require_channel()
        properties = pika.BasicProperties(content_type=CONTENT_TYPE, correlation_id=correlation_id)
        with self._waiting(f"publishing to {exchange or routing_key}"):
            channel.basic_publish(exchange, routing_key, body, properties)

    def dead_letter(self, delivery: JobDelivery, reason: str, field: str, detail: str) -> None:
        """Publish ``delivery`` to ``<prefix>.dead`` with why it cannot run (the caller acks the original)."""
        original = delivery.properties
        headers = {key: value for key, value in delivery.headers.items() if not key.startswith("x-death")}
        headers.update(topology.dead_letter_headers(reason, field, detail[:1000]))
        channel = self._require_channel()
        properties = pika.BasicProperties(
            content_type=getattr(original, "content_type", None), correlation_id=delivery.correlation_id,
            reply_to=delivery.reply_to, message_id=getattr(original, "message_id", None), delivery_mode=2,
            headers=headers)
        with self._waiting("dead-lettering"):
            channel.basic_publish(topology.dead_letter_exchange(self.settings.prefix), delivery.queue,
                                  delivery.body, properties)

    # -- the lease -------------------------------------------------------------------------------------

    def take_oldest(self, queue: str) -> bool:
        """Remove the oldest message of ``queue`` (the lease copy being renewed); False if it was empty."""
        channel = self._require_channel()
        with self._waiting(f"renewing the lease in {queue}"):
            method, _properties, _body = channel.basic_get(queue, auto_ack=True)
        return method is not None

    def purge(self, queue: str) -> None:
        channel = self._require_channel()
        with self._waiting(f"purging {queue}"):
            channel.queue_purge(queue)


def headers_without_death(headers: dict[str, Any], drop: Sequence[str] = ()) -> dict[str, Any]:
    """``headers`` without the broker's dead-lettering history and ``drop``, for a republished job."""
    return {key: value for key, value in headers.items()
            if key not in drop and not key.startswith("x-death") and not key.startswith("x-first-death")
            and not key.startswith("x-last-death") and key != "x-delivery-count"}
