"""Which policy version each episode acts with: the source of new episodes, and the older ones still in use.

A published policy can be replaced while episodes run (hot reload): new episodes start on the new source,
open ones finish on the source they started on, and a replaced source is let go once its last episode
closes. Episodes handed over from another worker continue on the version they started on.

A canary release (``worker/policy_store/releases.py``) adds a second source for new episodes: an episode
goes to the canary when the stable hash of its id (``canary_bucket``, the same on every worker) falls below
the canary's share, so it is sticky by construction, and whatever the release does next, an open episode
stays on the source it was opened with. A shadow candidate (``worker/episodes/shadow_candidate.py``) is a
third source whose deployments act beside every new episode's own, unanswered.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from typing import Any, Protocol

from maze_engine.deployment.agent_deployment import AgentDeployment

logger = logging.getLogger(__name__)


class DeploymentSource(Protocol):
    """What the table needs from a DeploymentFactory: fresh deployments sharing one policy.

    A source may also have ``policy_version`` (the published version of its policy), which the replies of its
    episodes carry; without it they carry nil.
    """

    policy: Any

    def create(self) -> AgentDeployment: ...


def version_of(source: DeploymentSource) -> int | None:
    """The published policy version of ``source``, None when it serves an unpublished policy."""
    return getattr(source, "policy_version", None)


def canary_bucket(episode: str) -> float:
    """A number in [0, 1) fixed by the episode id alone (the first 8 bytes of its BLAKE2b digest)."""
    digest = hashlib.blake2b(episode.encode("utf-8", "surrogatepass"), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2.0 ** 64


class PolicySources:
    """The current source (and a canary beside it), and the count of open episodes per source in use."""

    def __init__(self, current: DeploymentSource,
                 version_source: Callable[[int], DeploymentSource] | None = None,
                 on_released: Callable[[DeploymentSource], None] | None = None) -> None:
        self.current = current
        """Where new episodes come from."""
        self._version_source = version_source
        """Builds the source of a given policy version (for episodes handed over on an older version)."""
        self._on_released = on_released
        """Called when a replaced source loses its last episode (its policy is let go)."""
        self._users: dict[int, int] = {}
        """id(source) -> open episodes created from it."""
        self._sources: dict[int, DeploymentSource] = {}
        self.canary: DeploymentSource | None = None
        """Where ``canary_share`` of the new episodes come from, while a canary runs."""
        self.canary_share = 0.0
        self.shadow: DeploymentSource | None = None
        """The shadow candidate new episodes get beside their own source, while a release runs one."""

    def serve(self, source: DeploymentSource, canary: DeploymentSource | None = None,
              canary_share: float = 0.0, shadow: DeploymentSource | None = None) -> None:
        """New episodes come from ``source`` (and ``canary_share`` of them from ``canary``), with ``shadow``
        beside them; a replaced source is released when no episode uses it."""
        replaced = [self.current, self.canary, self.shadow]
        self.current, self.canary, self.shadow = source, canary, shadow
        self.canary_share = canary_share if canary is not None else 0.0
        for old in replaced:
            if old is not None and not self._in_service(old) and not self._users.get(id(old)):
                self._release(old)

    def _in_service(self, source: DeploymentSource) -> bool:
        return source is self.current or source is self.canary or source is self.shadow

    @property
    def mixed(self) -> bool:
        """Whether new or open episodes may act with more than one source (a canary, or a replaced source)."""
        return self.canary is not None or len(self._users) > 1

    def for_new(self, episode: str) -> DeploymentSource:
        """The source of a new episode: the canary when its id's bucket is below the canary's share."""
        canary = self.canary
        if canary is not None and canary_bucket(episode) < self.canary_share:
            return canary
        return self.current

    def acquire(self, source: DeploymentSource) -> None:
        """An episode starts using ``source``."""
        self._users[id(source)] = self._users.get(id(source), 0) + 1
        self._sources[id(source)] = source

    def release(self, source: DeploymentSource) -> None:
        """An episode stops using ``source``; a replaced source with no episode left is let go."""
        left = self._users.get(id(source), 0) - 1
        if left > 0:
            self._users[id(source)] = left
            return
        self._users.pop(id(source), None)
        self._sources.pop(id(source), None)
        if not self._in_service(source):
            self._release(source)

    def _release(self, source: DeploymentSource) -> None:
        if self._on_released is not None:
            self._on_released(source)

    def for_version(self, policy_version: int | None) -> DeploymentSource:
        """The source of ``policy_version`` for an episode handed over from another worker: the current one
        or one in use when it has that version, else one built by ``version_source``; the current one (with
        a logged warning) when that version cannot be had, so the episode still goes on."""
        current = self.current
        if policy_version is None or version_of(current) == policy_version:
            return current
        if self.canary is not None and version_of(self.canary) == policy_version:
            return self.canary
        for source in self._sources.values():
            if version_of(source) == policy_version:
                return source
        if self._version_source is not None:
            try:
                return self._version_source(policy_version)
            except Exception as err:  # noqa: BLE001 - a version gone from the artifact root must not lose it
                logger.warning("policy version %d of a handed-over episode cannot be loaded (%s); the "
                               "episode goes on with the current version", policy_version, err)
        return current
