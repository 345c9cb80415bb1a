"""A raw producer of protocol v1 for tests: publish any bytes or a state built with ``worker.wire``, collect
the replies by correlation id, read the dead letters. Deliberately not ``worker.client``: tests of bad input
need to send what the client would refuse to."""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence
from typing import Any

import msgpack
import pika

from worker.wire.protocol import CONTENT_TYPE, PROTOCOL_VERSION, StateMessage, encode_state


class Producer:
    """A raw protocol v1 producer on its own connection: publish anything, collect replies by id."""

    def __init__(self, amqp_url: str, prefix: str) -> None:
        self.prefix = prefix
        self.connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
        self.channel = self.connection.channel()
        self.reply_queue = self.channel.queue_declare("", exclusive=True).method.queue
        self.replies: dict[str, dict[str, Any]] = {}
        self.received = 0
        self.channel.basic_consume(self.reply_queue, self._on_reply, auto_ack=True)

    def _on_reply(self, channel: Any, method: Any, properties: Any, body: bytes) -> None:
        self.received += 1
        self.replies[properties.correlation_id] = msgpack.unpackb(body)

    def publish(self, body: bytes, routing_key: str, reply_to: str | None = "",
                correlation_id: str | None = None, content_type: str | None = CONTENT_TYPE,
                headers: dict[str, Any] | None = None) -> str:
        """Publish ``body`` to ``<prefix>.states``; ``reply_to=""`` means this producer's reply queue."""
        correlation_id = correlation_id if correlation_id is not None else uuid.uuid4().hex
        properties = pika.BasicProperties(reply_to=self.reply_queue if reply_to == "" else reply_to,
                                          correlation_id=correlation_id or None, content_type=content_type,
                                          headers=headers)
        self.channel.basic_publish(f"{self.prefix}.states", routing_key, body, properties)
        return correlation_id

    def send(self, episode: str, seq: int, state_value: Any, reward: Any = 1.0, done: bool = False,
             **extra: Any) -> str:
        """Publish a state of protocol v1 (``extra`` keys go into the map as they are)."""
        message = StateMessage(PROTOCOL_VERSION, episode, seq, state_value,
                               None if seq == 0 and reward == 1.0 else reward, done)
        body = encode_state(message)
        if extra:
            body = msgpack.packb({**msgpack.unpackb(body), **extra})
        return self.publish(body, episode)

    def wait(self, correlation_ids: Sequence[str], timeout: float = 20.0) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while any(cid not in self.replies for cid in correlation_ids):
            assert time.monotonic() < deadline, \
                f"{sum(cid not in self.replies for cid in correlation_ids)} replies missing after {timeout} s"
            self.connection.process_data_events(time_limit=0.05)
        return [self.replies.pop(cid) for cid in correlation_ids]

    def call(self, episode: str, seq: int, state_value: Any, **kwargs: Any) -> dict[str, Any]:
        return self.wait([self.send(episode, seq, state_value, **kwargs)])[0]

    def pump(self, until: Any, timeout: float = 30.0) -> None:
        """Process replies until ``until()`` is true; fails after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while not until():
            assert time.monotonic() < deadline, f"the condition was not met within {timeout} s"
            self.connection.process_data_events(time_limit=0.05)

    def dead_letters(self) -> list[tuple[Any, bytes]]:
        """Take every message from ``<prefix>.dead``: (properties, body) pairs."""
        taken: list[tuple[Any, bytes]] = []
        while True:
            method, properties, body = self.channel.basic_get(f"{self.prefix}.dead", auto_ack=True)
            if method is None:
                return taken
            taken.append((properties, body))

    def dead_letter_count(self) -> int:
        return int(self.channel.queue_declare(f"{self.prefix}.dead", passive=True).method.message_count)

    def close(self) -> None:
        if self.connection.is_open:
            self.connection.close()
