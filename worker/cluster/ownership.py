"""Which shard queues each worker owns: a pure, deterministic function of the live worker ids.

Every worker of a prefix computes the same assignment from the same live set
(``worker/cluster/membership.py``), so they agree without talking about it. The assignment is *balanced
rendezvous hashing*: each (shard, worker) pair gets a score from a stable hash; pairs are taken best score
first, and a shard goes to the first worker of its pairs that still has room. Room is ``floor(S/W)`` shards
per worker plus one for the first ``S mod W`` workers to fill up, so every worker owns floor(S/W) or
ceil(S/W) shards. A worker joining or leaving moves few shards: the scores of the other pairs do not change,
so most shards keep their owner.

    >>> assign(["a", "b"], 4) == assign(["b", "a"], 4)
    True
    >>> sorted(len(shards) for shards in owned_by(assign(["a", "b", "c"], 16)).values())
    [5, 5, 6]
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping


def _score(worker: str, shard: int) -> int:
    digest = hashlib.blake2b(f"{shard}\x00{worker}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def assign(workers: Iterable[str], shards: int) -> dict[int, str]:
    """Owner of each of the ``shards`` shard numbers, given the live ``workers`` (order does not matter).

    Raises ValueError for an empty worker set, a non-string or empty id, or a shard count below 1.
    """
    if type(shards) is not int or shards < 1:
        raise ValueError(f"shards: expected a positive integer, got {shards!r}")
    ids = sorted(set(workers))
    if not ids:
        raise ValueError("workers: expected at least one live worker id, got none")
    for worker in ids:
        if not isinstance(worker, str) or not worker:
            raise ValueError(f"workers: expected non-empty strings, got {worker!r}")
    base, extra = divmod(shards, len(ids))
    pairs = sorted(((_score(worker, shard), worker, shard) for worker in ids for shard in range(shards)),
                   reverse=True)
    counts = dict.fromkeys(ids, 0)
    owners: dict[int, str] = {}
    for _, worker, shard in pairs:
        if shard in owners:
            continue
        count = counts[worker]
        if count < base:
            pass
        elif count == base and extra:
            extra -= 1
        else:
            continue
        counts[worker] = count + 1
        owners[shard] = worker
        if len(owners) == shards:
            break
    assert len(owners) == shards, "room for every shard: W * floor(S/W) + S mod W == S"
    return owners


def owned_by(assignment: Mapping[int, str]) -> dict[str, list[int]]:
    """The assignment turned around: worker id -> its shard numbers in ascending order."""
    result: dict[str, list[int]] = {}
    for shard in sorted(assignment):
        result.setdefault(assignment[shard], []).append(shard)
    return result


def moves(before: Mapping[int, str], after: Mapping[int, str]) -> list[int]:
    """Shards whose owner differs between two assignments of the same shard count."""
    return [shard for shard in sorted(after) if before.get(shard) != after[shard]]
