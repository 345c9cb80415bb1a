"""Which shard each episode this worker may hold came through, and which shards it took over.

The coordinator notes the shard of every admitted state and of every imported episode; the episode table asks
``explains_loss`` about a state (seq > 0) of an episode it does not hold: when that episode's shard came from
another worker (this worker became active on it while others were around), the episode was most likely lost
with a crashed worker, and ``episodes.on_lost`` applies instead of ``unknown_episode``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from worker.wire.protocol import StateMessage


class EpisodeShards:
    """Episode id -> shard, and the set of shards taken over from other workers."""

    def __init__(self) -> None:
        self._shard_of: dict[str, int] = {}
        self._adopted: set[int] = set()

    def note(self, episode: str, shard: int) -> None:
        """``episode``'s states come through ``shard``."""
        self._shard_of[episode] = shard

    def forget(self, episode: str) -> None:
        self._shard_of.pop(episode, None)

    def on_shard(self, shard: int, held: Callable[[str], bool]) -> list[str]:
        """The episodes of ``shard`` that are ``held``."""
        return [episode for episode, index in self._shard_of.items() if index == shard and held(episode)]

    def any_on(self, shard: int) -> bool:
        """Whether any episode is noted on ``shard``."""
        return any(index == shard for index in self._shard_of.values())

    def adopt(self, shard: int) -> None:
        """This worker took ``shard`` over while other workers were live: it may have had an owner before."""
        self._adopted.add(shard)

    def release(self, shard: int) -> None:
        self._adopted.discard(shard)

    def prune(self, keep: Callable[[str], bool]) -> None:
        """Forget the episodes for which ``keep`` is false (closed long ago, never opened)."""
        self._shard_of = {episode: shard for episode, shard in self._shard_of.items() if keep(episode)}

    def explains_loss(self, message: StateMessage) -> bool:
        """Whether ``message`` (of an episode not held) may be of an episode lost with a crashed worker."""
        return self._shard_of.get(message.episode) in self._adopted

    def episodes(self) -> Iterable[str]:
        return self._shard_of.keys()
