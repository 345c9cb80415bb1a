"""Is there a broker the worker can use? One quick connection that says what is wrong in words, and the
tidy-up of a prefix's topology: for ``make demo``, the tests and the benchmarks."""

from __future__ import annotations

import contextlib
import uuid

import pika
import pika.exceptions

from worker.wire import topology

PLUGIN = "rabbitmq_consistent_hash_exchange"


class BrokerProblem:
    """Why a broker cannot be used: ``unreachable`` (no connection) or ``plugin_missing``."""

    UNREACHABLE = "unreachable"
    PLUGIN_MISSING = "plugin_missing"

    def __init__(self, kind: str, detail: str) -> None:
        self.kind = kind
        self.detail = detail

    def __str__(self) -> str:
        return self.detail


def _parameters(url: str, timeout: float) -> pika.URLParameters:
    parameters = pika.URLParameters(url)
    parameters.connection_attempts = 1
    parameters.socket_timeout = timeout
    parameters.stack_timeout = timeout * 2
    parameters.blocked_connection_timeout = timeout
    return parameters


def connect(url: str, timeout: float = 3.0) -> pika.BlockingConnection:
    """A blocking connection with short timeouts (raises pika's errors: for set-up and tidy-up code)."""
    return pika.BlockingConnection(_parameters(url, timeout))


def broker_problem(url: str, timeout: float = 3.0) -> BrokerProblem | None:
    """None if ``url`` reaches a broker with the consistent-hash exchange, else what is wrong."""
    try:
        connection = connect(url, timeout)
    except Exception as err:  # noqa: BLE001 - pika's handshake errors are not all AMQPError
        reason = type(err).__name__ if not str(err) else f"{type(err).__name__}: {err}"
        return BrokerProblem(BrokerProblem.UNREACHABLE,
                             f"no RabbitMQ reachable at {topology.mask_url(url)} ({reason})")
    try:
        channel = connection.channel()
        probe = f"maze-probe.{uuid.uuid4().hex[:8]}"
        try:
            channel.exchange_declare(probe, exchange_type=topology.states_exchange_type(), auto_delete=True)
        except pika.exceptions.AMQPError:
            return BrokerProblem(BrokerProblem.PLUGIN_MISSING,
                                 f"the broker at {topology.mask_url(url)} lacks the consistent-hash "
                                 f"exchange; enable it with `rabbitmq-plugins enable {PLUGIN}`")
        channel.exchange_delete(probe)
        return None
    finally:
        with contextlib.suppress(pika.exceptions.AMQPError):
            if connection.is_open:
                connection.close()


def _queue_exists(connection: pika.BlockingConnection, name: str) -> bool:
    channel = connection.channel()
    try:
        channel.queue_declare(name, passive=True)
    except pika.exceptions.ChannelClosedByBroker:  # 404: the broker closes the channel
        return False
    channel.close()
    return True


def delete_prefix(url: str, prefix: str, queues: tuple[str, ...] = (),
                  exchanges: tuple[str, ...] = ()) -> None:
    """Delete every queue and exchange the worker's topology may have under ``prefix`` (shard and hand-off
    queues of any count), plus ``queues`` and ``exchanges``."""
    connection = connect(url)
    try:
        channel = connection.channel()
        for family in (topology.states_exchange(prefix), f"{prefix}.handoff"):
            for width in (2, 3, 4):  # named with two digits, more beyond 100 shards
                index = 0
                while _queue_exists(connection, name := f"{family}.{index:0{width}d}"):
                    channel.queue_delete(name)
                    index += 1
                if index:  # one topology uses one width
                    break
        for name in (topology.dead_letter_queue(prefix), topology.experience_stream(prefix), *queues):
            channel.queue_delete(name)
        for name in (topology.states_exchange(prefix), topology.dead_letter_exchange(prefix),
                     topology.workers_exchange(prefix), topology.events_exchange(prefix),
                     topology.control_exchange(prefix), topology.policies_exchange(prefix), *exchanges):
            channel.exchange_delete(name)
    finally:
        with contextlib.suppress(pika.exceptions.AMQPError):
            if connection.is_open:
                connection.close()


def publish_notices(url: str, notices: list[tuple[str, str, str, bytes]], timeout: float = 10.0) -> None:
    """Publish rare notices, each ``(exchange, exchange type, routing key, body)``, persistent, on a
    short-lived connection (the exchanges are declared durable first); raises pika's errors for the caller."""
    connection = connect(url, timeout)
    try:
        channel = connection.channel()
        properties = pika.BasicProperties(content_type="application/msgpack", delivery_mode=2)
        for exchange, exchange_type, routing_key, body in notices:
            channel.exchange_declare(exchange, exchange_type=exchange_type, durable=True)
            channel.basic_publish(exchange, routing_key, body, properties)
    finally:
        with contextlib.suppress(pika.exceptions.AMQPError):
            if connection.is_open:
                connection.close()
