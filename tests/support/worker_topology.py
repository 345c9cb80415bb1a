"""Declare what ``maze-worker`` declares at start, from the topology functions, without running a worker."""

from __future__ import annotations

from typing import Any

from worker.wire import declarations


def declare_worker_topology(channel: Any, prefix: str, shards: int, bind: bool = True) -> None:
    """The states exchange, the shard queues (and, with ``bind``, their bindings) on a pika channel."""
    spec = declarations.worker_topology(prefix, shards)
    for exchange in spec.exchanges:
        channel.exchange_declare(exchange.name, exchange_type=exchange.type, durable=exchange.durable,
                                 arguments=exchange.arguments)
    for queue in spec.queues:
        channel.queue_declare(queue.name, durable=queue.durable, arguments=queue.arguments)
    if bind:
        for binding in spec.bindings:
            channel.queue_bind(binding.queue, binding.exchange, binding.routing_key)
