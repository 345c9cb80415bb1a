"""The agent worker's only contact with pika: declare the topology, consume, publish, acknowledge.

Everything pika raises is translated into the errors of ``worker.broker.link`` (re-exported here), so the
service loop reasons about ``BrokerConnectionLost`` and ``PluginMissing`` rather than about AMQP reply codes.
Publishing and acknowledging are buffered and written out by ``flush``: a batch of replies and its single
``multiple`` ack leave in one go. A call that waits for the broker gives up after ``ANSWER_TIMEOUT_S``
(``worker.broker.link``) with BrokerConnectionLost, so a stalled broker never holds the service loop.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

import pika
import pika.exceptions
from pika.adapters.blocking_connection import BlockingChannel

from worker.broker.delivery import Delivery
from worker.broker.link import (
    PLUGIN_HINT,
    AccessRefused,
    BrokerConnectionLost,
    BrokerLink,
    BrokerUnreachable,
    PluginMissing,
    TopologyConflict,
    TransportError,
    connection_parameters,
    translated_errors,
)
from worker.settings import BrokerSettings
from worker.wire import declarations, topology
from worker.wire.protocol import CONTENT_TYPE

logger = logging.getLogger(__name__)

__all__ = ["PLUGIN_HINT", "AccessRefused", "BrokerConnectionLost", "BrokerLink", "BrokerUnreachable",
           "Delivery", "PluginMissing", "TopologyConflict", "Transport", "TransportError",
           "connection_parameters", "translated_errors"]



def coalesce_output(connection: Any) -> None:
    """Join the frames pika has buffered into one write.

    pika queues every frame (a reply is three: method, header, body) as its own buffer and sends each with its
    own ``send()`` call; a batch of replies and its ack then costs a system call per frame, which profiles
    showed as the largest single cost of answering a state. Joined, the batch leaves in one call (pika
    requeues what a partial send leaves). Reaches into pika's transport (``pika>=1.3``), so it does nothing
    where that is not found.
    """
    transport = getattr(getattr(connection, "_impl", None), "_transport", None)
    buffers = getattr(transport, "_tx_buffers", None)
    if isinstance(buffers, deque) and len(buffers) > 1:
        joined = b"".join(buffers)
        buffers.clear()
        buffers.append(joined)

class Transport(BrokerLink):
    """A blocking connection with one channel that consumes every owned shard queue.

    Single-threaded by design: ``poll`` waits for the first delivery and then drains what pika has already
    buffered, so the batch grows with the load and nothing waits when the worker is idle.
    """

    def __init__(self, settings: BrokerSettings, connection_name: str | None = None) -> None:
        super().__init__(settings, connection_name
                         or f"maze-worker {settings.prefix} {socket.gethostname()}:{os.getpid()}")
        self._publish: Any = None
        self._consumers: dict[str, str] = {}
        self._inbox: list[Delivery] = []
        self._control: BlockingChannel | None = None
        self._heartbeats: list[bytes] = []
        self._cluster_connections = 0
        """Connections that declared this worker's heartbeat queue: each gets a queue of its own name."""

    # -- connection ------------------------------------------------------------------------------------

    def _opened(self, channel: BlockingChannel) -> None:
        # The impl channel's basic_publish only buffers, where BlockingChannel's flushes after every message;
        # replies of a batch are buffered and leave together with the batch's ack.
        self._publish = getattr(channel, "_impl", channel).basic_publish

    @property
    def is_consuming(self) -> bool:
        return self.is_open and bool(self._consumers)

    def _forget(self) -> None:
        self._control = None
        self._consumers.clear()
        self._inbox.clear()
        self._heartbeats.clear()

    # -- topology --------------------------------------------------------------------------------------

    def declare_topology(self) -> None:
        """Declare the states exchange, the shard queues and bindings, the dead-letter exchange and queue.

        Raises PluginMissing when the broker does not know the consistent-hash exchange type, TopologyConflict
        when a queue of the same name exists with other arguments.
        """
        self.declare(declarations.worker_topology(self.settings.prefix, self.settings.shards))

    # -- consuming -------------------------------------------------------------------------------------

    def consume(self, queues: Sequence[str]) -> None:
        """Start one manual-ack consumer per queue; at most ``prefetch`` unacked deliveries each."""
        channel = self._require_channel()
        with self._waiting("starting consumers"):
            channel.basic_qos(prefetch_count=self.settings.prefetch)
            for queue in queues:
                tag = channel.basic_consume(queue, self._on_delivery, auto_ack=False)
                self._consumers[tag] = queue

    def _on_delivery(self, channel: Any, method: Any, properties: Any, body: bytes) -> None:
        self._inbox.append(Delivery(
            tag=method.delivery_tag, body=body, reply_to=properties.reply_to,
            correlation_id=properties.correlation_id, content_type=properties.content_type,
            queue=self._consumers.get(method.consumer_tag, ""), routing_key=method.routing_key,
            redelivered=method.redelivered, received=time.perf_counter(), properties=properties,
            consumer_tag=method.consumer_tag))

    def poll(self, timeout: float) -> list[Delivery]:
        """Wait up to ``timeout`` seconds for deliveries, then take everything that has arrived meanwhile."""
        connection = self._connection
        if connection is None:
            raise BrokerConnectionLost("not connected")
        with self._waiting("receiving", extra_s=timeout):
            if not self._inbox:
                connection.process_data_events(time_limit=timeout)
            # Drain without waiting: each round reads what the socket holds right now.
            while True:
                held = len(self._inbox)
                connection.process_data_events(time_limit=0)
                if len(self._inbox) == held:
                    break
        deliveries, self._inbox = self._inbox, []
        return deliveries

    def cancel_consumers(self) -> None:
        """Stop receiving; deliveries pika holds but has not handed over go back to their queues."""
        channel = self._channel
        if channel is None:
            return
        with self._waiting("cancelling consumers"):
            for tag in list(self._consumers):
                channel.basic_cancel(tag)
                del self._consumers[tag]

    # -- sending (buffered until flush) ----------------------------------------------------------------

    def publish_reply(self, reply_to: str, correlation_id: str | None, body: bytes) -> None:
        """Queue a reply to the producer's ``reply_to`` queue (through the default exchange)."""
        self._require_channel()
        properties = pika.BasicProperties(correlation_id=correlation_id, content_type=CONTENT_TYPE)
        with translated_errors("publishing a reply"):
            self._publish(exchange="", routing_key=reply_to, body=body, properties=properties)

    def dead_letter(self, delivery: Delivery, reason: str, field: str, detail: str) -> None:
        """Queue ``delivery`` for ``<prefix>.dead``: body and properties plus why it cannot be answered."""
        self._require_channel()
        original = delivery.properties
        headers = dict(getattr(original, "headers", None) or {})
        headers.update(topology.dead_letter_headers(reason, field, detail[:1000]))
        properties = pika.BasicProperties(
            content_type=getattr(original, "content_type", None), correlation_id=delivery.correlation_id,
            reply_to=delivery.reply_to, message_id=getattr(original, "message_id", None),
            timestamp=getattr(original, "timestamp", None), delivery_mode=2, headers=headers)
        with translated_errors("dead-lettering"):
            self._publish(exchange=topology.dead_letter_exchange(self.settings.prefix),
                          routing_key=delivery.routing_key, body=delivery.body, properties=properties)

    def ack(self, tag: int, multiple: bool = False) -> None:
        """Acknowledge ``tag`` (and, with ``multiple``, every earlier delivery on this channel)."""
        channel = self._require_channel()
        with translated_errors("acknowledging"):
            # Goes through the impl channel too, so it queues behind the replies and flush sends both.
            getattr(channel, "_impl", channel).basic_ack(delivery_tag=tag, multiple=multiple)

    def flush(self) -> None:
        """Write out the buffered replies, dead-letters and acks (and read what the broker sent meanwhile)."""
        connection = self._connection
        if connection is None:
            raise BrokerConnectionLost("not connected")
        coalesce_output(connection)
        with self._waiting("sending"):
            connection.process_data_events(time_limit=0)

    # -- policy announcements --------------------------------------------------------------------------

    def subscribe_policies(self, on_announcement: Callable[[bytes], None]) -> None:
        """Hear ``<prefix>.policies`` (declared durable fanout) on an exclusive auto-delete queue of this
        connection; ``on_announcement(body)`` runs inside ``poll``, on this thread. Again after reconnects."""
        channel = self._require_channel()
        exchange = topology.policies_exchange(self.settings.prefix)

        def deliver(channel: Any, method: Any, properties: Any, body: bytes) -> None:
            try:
                on_announcement(body)
            except Exception:  # noqa: BLE001 - a bad announcement must not break the service loop
                logger.exception("handling a policy announcement failed")

        with self._waiting(f"subscribing to {exchange}"):
            channel.exchange_declare(exchange, exchange_type=topology.policies_exchange_type(), durable=True)
            queue = channel.queue_declare("", exclusive=True, auto_delete=True).method.queue
            channel.queue_bind(queue, exchange, routing_key="")
            channel.basic_consume(queue, deliver, auto_ack=True)

    def publish_notice(self, exchange: str, exchange_type: str, routing_key: str, body: bytes) -> None:
        """Declare ``exchange`` (durable) and publish ``body`` to it at once: rare notices such as a canary
        release decision (on ``<prefix>.events``) and its announcement (on ``<prefix>.policies``)."""
        channel = self._require_channel()
        with self._waiting(f"publishing to {exchange}"):
            channel.exchange_declare(exchange, exchange_type=exchange_type, durable=True)
            channel.basic_publish(exchange, routing_key, body,
                                  pika.BasicProperties(content_type="application/msgpack", delivery_mode=2))

    # -- the cluster of agent workers: per-shard consumers, heartbeats, hand-off records ----------------

    def consume_queue(self, queue: str) -> str:
        """Subscribe to one shard queue (at the back of its single-active-consumer line); returns the tag."""
        channel = self._require_channel()
        with self._waiting(f"subscribing to {queue}"):
            channel.basic_qos(prefetch_count=self.settings.prefetch)
            tag = channel.basic_consume(queue, self._on_delivery, auto_ack=False)
        self._consumers[tag] = queue
        return tag

    def cancel_consumer(self, tag: str) -> list[Delivery]:
        """Cancel one consumer; returns its deliveries handed over but not yet taken by ``poll`` (the caller
        settles them, e.g. with ``nack``). Deliveries pika still holds go back to the queue."""
        channel = self._require_channel()
        with self._waiting(f"cancelling the consumer of {self._consumers.get(tag, tag)}"):
            channel.basic_cancel(tag)
        self._consumers.pop(tag, None)
        held = [delivery for delivery in self._inbox if delivery.consumer_tag == tag]
        if held:
            self._inbox = [delivery for delivery in self._inbox if delivery.consumer_tag != tag]
        return held

    def nack(self, tag: int) -> None:
        """Give one delivery back to its queue unanswered (the broker delivers it to the active consumer)."""
        channel = self._require_channel()
        with translated_errors("returning a delivery"):
            getattr(channel, "_impl", channel).basic_nack(delivery_tag=tag, multiple=False, requeue=True)

    def declare_cluster(self, worker_id: str) -> None:
        """Open the control channel (publisher confirms): declare the heartbeat exchange, the hand-off
        queues and this worker's own heartbeat queue, and start receiving heartbeats."""
        connection = self._connection
        if connection is None:
            raise BrokerConnectionLost("not connected")
        prefix, shards = self.settings.prefix, self.settings.shards
        spec = declarations.cluster_topology(prefix, shards)
        with self._waiting("opening the control channel"):
            control = connection.channel()
            control.confirm_delivery()
        for exchange in spec.exchanges:
            with self._waiting(f"declaring exchange {exchange.name}"):
                control.exchange_declare(exchange.name, exchange_type=exchange.type, durable=exchange.durable)
        for queue in spec.queues:
            with self._waiting(f"declaring queue {queue.name}"):
                control.queue_declare(queue.name, durable=queue.durable, arguments=queue.arguments or None)
        self._cluster_connections += 1
        own = topology.worker_queue(prefix, worker_id, self._cluster_connections)
        with self._waiting(f"declaring queue {own}"):
            control.queue_declare(own, exclusive=True, auto_delete=True)
            control.queue_bind(own, topology.workers_exchange(prefix), routing_key="")
            control.basic_consume(own, self._on_heartbeat, auto_ack=True)
        self._control = control

    def _on_heartbeat(self, channel: Any, method: Any, properties: Any, body: bytes) -> None:
        self._heartbeats.append(body)

    def _require_control(self) -> BlockingChannel:
        if self._control is None or self._connection is None:
            raise BrokerConnectionLost("not connected")
        return self._control

    def publish_heartbeat(self, body: bytes) -> None:
        """Announce this worker on ``<prefix>.workers`` (transient; waits for the broker's confirm)."""
        control = self._require_control()
        with self._waiting("publishing a heartbeat"):
            control.basic_publish(topology.workers_exchange(self.settings.prefix), "", body,
                                  pika.BasicProperties(content_type=CONTENT_TYPE))

    def take_heartbeats(self) -> list[bytes]:
        """The heartbeat bodies received since the last call."""
        taken, self._heartbeats = self._heartbeats, []
        return taken

    def publish_handoff(self, queue: str, body: bytes) -> None:
        """Publish a hand-off message persistently to ``queue``; returns once the broker confirmed it."""
        control = self._require_control()
        properties = pika.BasicProperties(content_type=CONTENT_TYPE, delivery_mode=2)
        try:
            with self._waiting(f"publishing hand-off records to {queue}"):
                control.basic_publish("", queue, body, properties, mandatory=True)
        except BrokerConnectionLost:
            raise
        except TransportError as err:
            raise BrokerConnectionLost(str(err)) from err

    def get_handoffs(self, queue: str) -> list[tuple[int, bytes]]:
        """Every message now in hand-off ``queue``: (delivery tag, body) pairs, to ``ack_handoff`` once
        imported."""
        control = self._require_control()
        taken: list[tuple[int, bytes]] = []
        while True:  # one deadline per call: a long queue of records is no stall
            with self._waiting(f"reading hand-off records from {queue}"):
                method, _properties, body = control.basic_get(queue, auto_ack=False)
            if method is None:
                return taken
            taken.append((method.delivery_tag, body))

    def ack_handoff(self, tag: int) -> None:
        """Remove an imported hand-off message (and every earlier one read on the control channel)."""
        control = self._require_control()
        with self._waiting("acknowledging hand-off records"):
            control.basic_ack(delivery_tag=tag, multiple=True)
