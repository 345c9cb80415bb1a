"""The whole topology of a prefix, declaratively: the exchanges, queues and bindings each service declares.

The names and arguments come from ``worker.wire.topology``; the broker edge declares these specs as they are.
"""

from dataclasses import dataclass, field
from typing import Any

from worker.wire import topology


@dataclass(frozen=True)
class ExchangeSpec:
    """One exchange to declare."""

    name: str
    type: str
    durable: bool = True
    arguments: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class QueueSpec:
    """One queue to declare."""

    name: str
    durable: bool = True
    arguments: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class BindingSpec:
    """One queue-to-exchange binding."""

    queue: str
    exchange: str
    routing_key: str
    arguments: dict[str, Any] = field(default_factory=dict)
    """Binding arguments (a headers exchange matches on them)."""


@dataclass(frozen=True)
class Topology:
    """Everything the worker declares at start, in order: exchanges, then queues, then bindings."""

    exchanges: tuple[ExchangeSpec, ...]
    queues: tuple[QueueSpec, ...]
    bindings: tuple[BindingSpec, ...]


def worker_topology(prefix: str = topology.DEFAULT_PREFIX, shards: int = topology.DEFAULT_SHARDS) -> Topology:
    """The states exchange over ``shards`` quorum shard queues, and the dead-letter exchange and queue."""
    states = topology.states_exchange(prefix)
    dead = topology.dead_letter_exchange(prefix)
    queues = [QueueSpec(topology.dead_letter_queue(prefix), arguments=topology.dead_letter_queue_arguments())]
    bindings = [BindingSpec(topology.dead_letter_queue(prefix), dead, "")]
    for name in topology.shard_queues(prefix, shards):
        queues.append(QueueSpec(name, arguments=topology.shard_queue_arguments(prefix)))
        bindings.append(BindingSpec(name, states, topology.SHARD_BINDING_WEIGHT))
    return Topology(
        exchanges=(ExchangeSpec(dead, topology.dead_letter_exchange_type()),
                   ExchangeSpec(states, topology.states_exchange_type())),
        queues=tuple(queues),
        bindings=tuple(bindings),
    )




def jobs_topology(prefix: str = topology.DEFAULT_PREFIX, delivery_limit: int = 3,
                  kinds: tuple[str, ...] = topology.JOB_KINDS) -> Topology:
    """The job queues of ``kinds``, the return exchange of expired leases, the events, control and
    policies exchanges, and the dead-letter exchange and queue (shared with the agent workers)."""
    dead = topology.dead_letter_exchange(prefix)
    back = topology.jobs_return_exchange(prefix)
    queues = [QueueSpec(topology.dead_letter_queue(prefix), arguments=topology.dead_letter_queue_arguments())]
    bindings = [BindingSpec(topology.dead_letter_queue(prefix), dead, "")]
    for kind in kinds:
        name = topology.jobs_queue(prefix, kind)
        queues.append(QueueSpec(name, arguments=topology.jobs_queue_arguments(prefix, delivery_limit)))
        bindings.append(BindingSpec(name, back, "", {"x-match": "all", topology.JOB_KIND_HEADER: kind}))
    return Topology(
        exchanges=(ExchangeSpec(dead, topology.dead_letter_exchange_type()),
                   ExchangeSpec(back, "headers"),
                   ExchangeSpec(topology.events_exchange(prefix), topology.events_exchange_type()),
                   ExchangeSpec(topology.control_exchange(prefix), topology.control_exchange_type()),
                   ExchangeSpec(topology.policies_exchange(prefix), topology.policies_exchange_type())),
        queues=tuple(queues),
        bindings=tuple(bindings),
    )


def cluster_topology(prefix: str = topology.DEFAULT_PREFIX,
                     shards: int = topology.DEFAULT_SHARDS) -> Topology:
    """What agent workers share besides the shards: the heartbeat exchange and the hand-off queues."""
    return Topology(
        exchanges=(ExchangeSpec(topology.workers_exchange(prefix), topology.workers_exchange_type()),),
        queues=tuple(QueueSpec(name, arguments=topology.handoff_queue_arguments())
                     for name in topology.handoff_queues(prefix, shards)),
        bindings=(),
    )


# ---------------------------------------------------------------------------------------------- broker URL
