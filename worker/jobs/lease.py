"""A job worker's lease on the job it runs: how "acknowledged when the job ended" is realised on RabbitMQ 3.10
without tripping the broker's consumer acknowledgement timeout (docs/jobs.md, "At least once").

The lease is a copy of the job message in the worker's own queue ``<prefix>.jobs.lease.<worker_id>``, whose
messages expire after the lease TTL into ``<prefix>.jobs.return`` and from there back to the job queue of
their kind. ``take`` publishes the copy (confirmed) before the original delivery is acknowledged; ``renew``
publishes a fresh copy before it drops the old one, so the broker always holds the job somewhere; ``release``
empties the queue when the job has ended. A worker that dies renews nothing and its job comes back.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

from worker.broker.job_transport import JobDelivery, JobTransport


class JobLease:
    """The lease on one running job; see the module docstring."""

    def __init__(self, transport: JobTransport, queue: str, ttl_s: float, clock: Callable[[], float]) -> None:
        self.transport = transport
        self.queue = queue
        self.ttl_s = ttl_s
        self.clock = clock
        self.last_renewed = clock()
        self.next_renewal = self.last_renewed + self.renew_every

    @property
    def renew_every(self) -> float:
        return self.ttl_s / 3

    def take(self, delivery: JobDelivery, headers: dict[str, Any]) -> JobDelivery:
        """Move ``delivery`` under the lease (copy confirmed, then the original acknowledged); returns the
        delivery as the lease holds it (with ``headers``)."""
        self._publish(delivery.body, headers, delivery.reply_to, delivery.correlation_id)
        self.transport.ack(delivery.tag)
        self._renewed()
        return replace(delivery, headers=headers)

    @property
    def due(self) -> bool:
        return self.clock() >= self.next_renewal

    def lapsed(self, margin: float = 0.9) -> bool:
        """True once the last renewal is (nearly) a whole TTL ago: the copy may be back on the job queue."""
        return self.clock() - self.last_renewed >= self.ttl_s * margin

    def renew(self, delivery: JobDelivery) -> None:
        """A fresh copy (confirmed), then the oldest one dropped: never fewer than one copy."""
        self._publish(delivery.body, delivery.headers, delivery.reply_to, delivery.correlation_id)
        self.transport.take_oldest(self.queue)
        self._renewed()

    def reclaim(self, delivery: JobDelivery) -> None:
        """After a reconnect: replace whatever copies are left by one fresh copy."""
        self.transport.purge(self.queue)
        self._publish(delivery.body, delivery.headers, delivery.reply_to, delivery.correlation_id)
        self._renewed()

    def release(self) -> None:
        """The job has ended (answered, or put back on its queue): drop the copy."""
        self.transport.purge(self.queue)

    def _publish(self, body: bytes, headers: dict[str, Any], reply_to: str | None,
                 correlation_id: str | None) -> None:
        self.transport.publish_confirmed("", self.queue, body, headers=headers, reply_to=reply_to,
                                         correlation_id=correlation_id)

    def _renewed(self) -> None:
        self.last_renewed = self.clock()
        self.next_renewal = self.last_renewed + self.renew_every
