"""Which shard queues this worker consumes.

The one place that decides it: today a worker owns every shard of its prefix. Balancing shards over several
workers (and standing by on the others) grows here, behind the same two questions the service asks.
"""

from dataclasses import dataclass

from worker import topology


@dataclass(frozen=True)
class ShardOwnership:
    """The shards of ``prefix`` (``shards`` of them) that this worker consumes."""

    prefix: str
    shards: int

    def owned_shards(self) -> list[int]:
        """Shard numbers to consume, in ascending order."""
        return list(range(self.shards))

    def owned_queues(self) -> list[str]:
        """Names of the shard queues to consume."""
        return [topology.shard_queue(self.prefix, shard, self.shards) for shard in self.owned_shards()]
