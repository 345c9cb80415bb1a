"""Asking the other workers for an episode: states held back while their episode is handed over.

When the broker restarts, the consistent-hash exchange rebuilds its ring from the bindings in an order of its
own. The rebuilt ring can send an episode's states to another shard than before, and so to another worker
than the one holding the episode. So a state of an episode this worker does not hold (seq > 0), arriving on
a shard it owns while other workers are live, is held back and *claimed*:

1. the claim goes out with a heartbeat (``Heartbeat.claims``);
2. the worker holding the episode hands it over to that shard's hand-off queue, as in a planned move;
3. the held states are answered once the episode is imported.

A claim nobody answers within the wait (the episode's worker crashed, or the episode never existed) lets its
states go on as they would have: ``episodes.on_lost`` or ``unknown_episode``. Held states count against
their shard's prefetch, so at most half of it is held per shard: a flood of states for episodes nobody has
cannot stall a shard. Broker-free; the coordinator (``worker/cluster/coordinator.py``) does the sending
and importing.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

from worker.broker.delivery import Delivery

EXPIRED_MEMORY = 4096
"""Episodes whose claim went unanswered, remembered so that their next states are not held back again..."""
EXPIRED_FOR_S = 60.0
"""...for this long (a later broker restart may route such an episode here again while another worker holds
it)."""


@dataclass
class _Claim:
    shard: int
    until: float
    deliveries: list[Delivery] = field(default_factory=list)


class EpisodeClaims:
    """The episodes this worker has asked for and the deliveries waiting for them."""

    def __init__(self, wait_s: float, max_held_per_shard: int,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.wait_s = wait_s
        self.max_held_per_shard = max_held_per_shard
        self.clock = clock
        self._held: dict[int, int] = {}
        """Shard -> deliveries held back for it."""
        self._claims: dict[str, _Claim] = {}
        self._unsent: list[tuple[str, int]] = []
        self._expired: OrderedDict[str, float] = OrderedDict()
        """Episode -> when its claim went unanswered, oldest first."""

    def __bool__(self) -> bool:
        """Whether deliveries are held back (their acknowledgements must not be covered by others')."""
        return bool(self._claims)

    def __contains__(self, episode: object) -> bool:
        return episode in self._claims

    def hold(self, episode: str, shard: int, delivery: Delivery) -> bool:
        """Hold ``delivery`` back while ``episode`` is claimed for ``shard``; False (handle the state at once)
        when its claim already went unanswered or the shard holds its maximum."""
        if self._held.get(shard, 0) >= self.max_held_per_shard:
            return False
        claim = self._claims.get(episode)
        if claim is None:
            now = self.clock()
            expired = self._expired.get(episode)
            if expired is not None and now - expired < EXPIRED_FOR_S:
                return False
            claim = self._claims[episode] = _Claim(shard, now + self.wait_s)
            self._unsent.append((episode, shard))
        claim.deliveries.append(delivery)
        self._held[shard] = self._held.get(shard, 0) + 1
        return True

    def _pop(self, episode: str) -> list[Delivery]:
        claim = self._claims.pop(episode)
        self._held[claim.shard] -= len(claim.deliveries)
        return claim.deliveries

    def take_unsent(self) -> tuple[tuple[str, int], ...]:
        """The ``(episode, shard)`` claims not sent yet."""
        unsent, self._unsent = self._unsent, []
        return tuple(unsent)

    def shards(self) -> set[int]:
        """The shards whose hand-off queues may bring claimed episodes."""
        return {claim.shard for claim in self._claims.values()}

    def ready(self, arrived: Callable[[str], bool]) -> list[Delivery]:
        """The held deliveries to handle now: their episode ``arrived`` or their wait is over."""
        now = self.clock()
        done = [episode for episode, claim in self._claims.items() if now >= claim.until or arrived(episode)]
        released: list[Delivery] = []
        for episode in done:
            released += self._pop(episode)
            if not arrived(episode):
                self._expired.pop(episode, None)
                self._expired[episode] = now
                if len(self._expired) > EXPIRED_MEMORY:
                    self._expired.popitem(last=False)
        return released

    def drop_shard(self, shard: int) -> list[Delivery]:
        """Forget the claims for ``shard`` (it moves away); returns their deliveries, to give back."""
        dropped = [episode for episode, claim in self._claims.items() if claim.shard == shard]
        return [delivery for episode in dropped for delivery in self._pop(episode)]

    def clear(self) -> None:
        """The connection is gone, and with it the held deliveries (the broker delivers them again)."""
        self._claims.clear()
        self._unsent.clear()
        self._held.clear()
