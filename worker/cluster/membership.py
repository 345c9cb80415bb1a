"""Which agent workers of a prefix are alive: heartbeats in, the live set out. Broker-free.

Every worker publishes a small heartbeat on the fanout exchange ``<prefix>.workers`` every
``cluster.heartbeat_interval_s`` and reads everyone's (its own included) from its exclusive queue. A worker
is live while its last heartbeat is younger than ``cluster.liveness_timeout_s``; one that stops on purpose
says so (``leaving``) and drops out at once. The transport does the sending and receiving; this module only
encodes, decodes and keeps the times.
"""

from __future__ import annotations

import logging
import os
import socket
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass

import msgpack

from worker.errors import WorkerError
from worker.wire.checks import describe

logger = logging.getLogger(__name__)

HEARTBEAT_VERSION = 1


def new_worker_id() -> str:
    """A fresh id for this process: host, pid and a random part (``[A-Za-z0-9_-]``, at most 64 characters)."""
    host = "".join(char if char.isalnum() or char in "_-" else "-" for char in socket.gethostname())[:32]
    return f"{host or 'worker'}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


@dataclass(frozen=True)
class Heartbeat:
    """One worker's announcement: its id, and whether it is leaving (stopping after a hand-off).

    ``claims`` ask the others for episodes: ``(episode, shard)`` pairs of states that reached this worker on
    ``shard`` for episodes it does not hold. Whoever holds one hands it over to that shard (see
    ``worker/cluster/coordinator.py``: the broker can route an episode to another shard after it restarts).
    """

    worker: str
    leaving: bool = False
    claims: tuple[tuple[str, int], ...] = ()


class HeartbeatError(WorkerError, ValueError):
    """A heartbeat body that cannot be read (ignored by the receiver, logged once)."""


def encode_heartbeat(heartbeat: Heartbeat) -> bytes:
    body = {"v": HEARTBEAT_VERSION, "worker": heartbeat.worker, "leaving": heartbeat.leaving}
    if heartbeat.claims:
        body["claims"] = [list(claim) for claim in heartbeat.claims]
    return msgpack.packb(body)


def decode_heartbeat(body: bytes) -> Heartbeat:
    """Decode a heartbeat; raises HeartbeatError naming the field that is wrong."""
    try:
        obj = msgpack.unpackb(body, raw=False)
    except Exception as err:  # msgpack raises several unrelated types for corrupt input
        raise HeartbeatError(f"body: expected a msgpack map, got undecodable bytes ({describe(err)})") \
            from None
    if type(obj) is not dict or obj.get("v") != HEARTBEAT_VERSION:
        raise HeartbeatError(f"v: expected heartbeat version {HEARTBEAT_VERSION}, got {describe(obj)}")
    worker, leaving = obj.get("worker"), obj.get("leaving", False)
    if type(worker) is not str or not worker:
        raise HeartbeatError(f"worker: expected a non-empty string, got {describe(worker)}")
    if type(leaving) is not bool:
        raise HeartbeatError(f"leaving: expected true or false, got {describe(leaving)}")
    return Heartbeat(worker, leaving, _claims(obj.get("claims", [])))


def _claims(value: object) -> tuple[tuple[str, int], ...]:
    if type(value) is not list:
        raise HeartbeatError(f"claims: expected an array of [episode, shard] pairs, got {describe(value)}")
    claims = []
    for claim in value:
        if type(claim) is not list or len(claim) != 2 or type(claim[0]) is not str \
                or type(claim[1]) is not int or claim[1] < 0:
            raise HeartbeatError(f"claims: expected [episode, shard] pairs (a string and an integer >= 0), "
                                 f"got {describe(claim)}")
        claims.append((claim[0], claim[1]))
    return tuple(claims)


class Membership:
    """The live set as this worker sees it; ``self_id`` is always in it until ``leave()``."""

    def __init__(self, self_id: str, liveness_timeout_s: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if not liveness_timeout_s > 0:
            raise ValueError(f"liveness_timeout_s: expected a number > 0, got {liveness_timeout_s!r}")
        self.self_id = self_id
        self.liveness_timeout_s = liveness_timeout_s
        self.clock = clock
        self._last_seen: dict[str, float] = {}
        self._leaving = False

    def observe(self, heartbeat: Heartbeat) -> None:
        """Note a heartbeat; a leaving worker drops out of the live set at once."""
        if heartbeat.worker == self.self_id:
            return
        if heartbeat.leaving:
            if self._last_seen.pop(heartbeat.worker, None) is not None:
                logger.info("worker %s is leaving", heartbeat.worker)
            return
        if heartbeat.worker not in self._last_seen:
            logger.info("worker %s joined", heartbeat.worker)
        self._last_seen[heartbeat.worker] = self.clock()

    def expire(self) -> list[str]:
        """Drop the workers whose last heartbeat is older than the liveness timeout; returns their ids."""
        deadline = self.clock() - self.liveness_timeout_s
        gone = [worker for worker, seen in self._last_seen.items() if seen < deadline]
        for worker in gone:
            del self._last_seen[worker]
            logger.warning("worker %s missed its heartbeats for %g s: taking it for dead", worker,
                           self.liveness_timeout_s)
        return gone

    def refresh_all(self) -> None:
        """Count every known worker as just seen: after this worker's own broker outage, when nobody's
        heartbeats could arrive, the others get a full liveness timeout to be heard again."""
        now = self.clock()
        for worker in self._last_seen:
            self._last_seen[worker] = now

    def leave(self) -> None:
        """From now on this worker owns nothing: every shard goes to the others."""
        self._leaving = True

    @property
    def leaving(self) -> bool:
        return self._leaving

    def others(self) -> frozenset[str]:
        """Live workers other than this one."""
        return frozenset(self._last_seen)

    def live(self) -> frozenset[str]:
        """Live worker ids, this one included unless it is leaving."""
        others = frozenset(self._last_seen)
        return others if self._leaving else others | {self.self_id}
