"""One message as the broker handed it to a worker: what the service, the cluster and the claims work on.

Plain data, no pika: the modules above the broker edge can hold deliveries without importing it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(slots=True)
class Delivery:
    """One message as the broker handed it to this worker."""

    tag: int
    """Delivery tag, valid on the current channel only."""
    body: bytes
    reply_to: str | None
    correlation_id: str | None
    content_type: str | None
    queue: str
    routing_key: str
    redelivered: bool
    received: float
    """``time.perf_counter()`` when the worker got it, for the handling-latency metric."""
    properties: Any
    """The original properties, kept opaque so a dead-letter carries them unchanged."""
    consumer_tag: str = ""
    """The consumer it came through (one per shard queue), for passing a shard on."""
