"""Ask a running ``maze-worker`` for its spaces: the describe request of docs/protocol.md, section 4a.

``describe_worker`` publishes ``{"v": 1, "describe": true}`` to ``<prefix>.states`` on its own short-lived
connection and returns the ``describe`` map of the reply: the state and action spaces a producer must fit,
the policy's observation and action spaces, and the serving mode. ``maze-worker describe <overrides>``
prints the same without a broker.
"""

from __future__ import annotations

import contextlib
import time
import uuid
from typing import Any

import pika
import pika.exceptions

from worker.client import connection
from worker.client.errors import ClientTimeout, ConnectionFailed, TopologyMissing
from worker.wire import topology
from worker.wire.protocol import CONTENT_TYPE, DecodeError, encode_describe_request
from worker.wire.replies import DESCRIBE_REPLY_FIELD, decode_reply


def describe_worker(url: str | None = None, prefix: str = topology.DEFAULT_PREFIX,
                    timeout: float = 10.0) -> dict[str, Any]:
    """The description a worker of ``prefix`` answers (any one of them: they serve the same agent).

    Raises ConnectionFailed, TopologyMissing (no worker declared ``<prefix>.states``) or ClientTimeout.
    """
    url = topology.amqp_url(url)
    exchange = topology.states_exchange(prefix)
    try:
        conn = pika.BlockingConnection(connection.parameters(url, "maze-client describe", timeout))
    except connection.CONNECT_ERRORS as err:
        raise ConnectionFailed(f"cannot connect to {topology.mask_url(url)}: "
                               f"{connection.describe(err, url)}") from None
    try:
        channel = conn.channel()
        try:
            channel.exchange_declare(exchange, passive=True)
        except pika.exceptions.ChannelClosedByBroker:
            raise TopologyMissing(f"{exchange} does not exist: no maze-worker has started with "
                                  f"broker.prefix={prefix}") from None
        reply_queue = channel.queue_declare("", exclusive=True).method.queue
        correlation_id = uuid.uuid4().hex
        bodies: list[bytes] = []
        channel.basic_consume(reply_queue, lambda _c, _m, properties, body: bodies.append(body)
                              if properties.correlation_id == correlation_id else None, auto_ack=True)
        channel.basic_publish(exchange, "describe", encode_describe_request(), pika.BasicProperties(
            reply_to=reply_queue, correlation_id=correlation_id, content_type=CONTENT_TYPE))
        deadline = time.monotonic() + timeout
        while not bodies and time.monotonic() < deadline:
            conn.process_data_events(time_limit=min(0.1, max(0.0, deadline - time.monotonic())))
        if not bodies:
            raise ClientTimeout(f"no answer to the describe request within {timeout:g} s; is maze-worker "
                                f"running with broker.prefix={prefix}?", [correlation_id], {})
        try:
            reply = decode_reply(bodies[0])
        except DecodeError as err:
            raise ClientTimeout(f"the worker's answer could not be read: {err}", [correlation_id],
                                {}) from None
        description = reply.extra.get(DESCRIBE_REPLY_FIELD)
        if not isinstance(description, dict):
            error = reply.error.message if reply.error is not None else "no description in the reply"
            raise ClientTimeout(f"the worker did not describe itself ({error}); it may predate describe "
                                f"requests", [correlation_id], {})
        return description
    finally:
        with contextlib.suppress(*connection.CONNECT_ERRORS):
            if conn.is_open:
                conn.close()
