"""Hot reload of a published policy: an agent worker picks up newer versions without a restart.

``published_source`` builds the DeploymentFactory of the latest published version of the configured policy
(``policy=published_policy policy.name=<name>``), wrapped as a ``VersionedFactory`` that knows how to build
any other version. The service gives it to a ``PolicyReloader``, which hears announcements on
``<prefix>.policies`` (and checks the artifact root after every (re)connect, for announcements missed while
disconnected) and loads a newer version on its own thread: reading files and building nets never stalls the
service loop. The service takes the loaded version between batches (``take_ready``) and hands it to the
EpisodeTable, where new episodes get it and running ones finish on theirs. A version that cannot be loaded
(missing or corrupt files, weights that do not fit, spaces other than the served env's) is logged with the
reason, counted, remembered as rejected, and the current version keeps serving.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable, Mapping
from enum import StrEnum
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf
from prometheus_client import CollectorRegistry, Counter, Gauge

from maze_engine.core.errors import ConfigError
from maze_engine.core.factory import resolve_target
from maze_engine.deployment.agent_deployment import AgentDeployment
from worker.policy_store.store import (
    STATISTICS_FILE,
    AnnouncementError,
    PublishedPolicy,
    check_name,
    decode_announcement,
    get_policy,
    load_published_policy,
    names_hint,
    published_versions,
)

logger = logging.getLogger(__name__)

PUBLISHED_POLICY_TARGET = f"{load_published_policy.__module__}.{load_published_policy.__qualname__}"
"""The ``_target_`` of ``conf/policy/published_policy.yaml``."""

FactoryBuilder = Callable[[Any, Any, Any], Any]
"""``(policy config, env config, wrappers config) -> DeploymentFactory`` (the service's ``build_factory``)."""


class VersionedFactory:
    """The DeploymentFactory of one published version, plus how to build the factory of another version."""

    def __init__(self, factory: Any, published: PublishedPolicy,
                 rebuild: Callable[[PublishedPolicy], VersionedFactory], follows_latest: bool = True) -> None:
        self.factory = factory
        self.published = published
        self.rebuild = rebuild
        self.follows_latest = follows_latest
        """False when the config pins a version: then no newer one is loaded."""
        self.rejected_at_start: frozenset[int] = frozenset()
        """Newer versions that could not be loaded when the worker started (the reloader skips them)."""
        self.policy: Any = factory.policy

    @property
    def policy_version(self) -> int:
        """The version replies of this factory's episodes carry."""
        return self.published.version

    @property
    def name(self) -> str:
        return self.published.name

    def create(self) -> AgentDeployment:
        deployment: AgentDeployment = self.factory.create()
        return deployment

    def at_version(self, version: int) -> VersionedFactory:
        """The factory of another published ``version`` of the same name (self for this one); raises what
        loading it raises."""
        if version == self.policy_version:
            return self
        artifact_root = self.published.path.parents[2]  # <root>/policies/<name>/<version>
        return self.rebuild(get_policy(artifact_root, self.name, version))


def published_policy_name(policy_config: Any) -> str | None:
    """The policy name when ``policy_config`` is a published policy's config, else None."""
    if isinstance(policy_config, DictConfig):
        policy_config = OmegaConf.to_container(policy_config, resolve=True)
    if not isinstance(policy_config, Mapping) or policy_config.get("_target_") != PUBLISHED_POLICY_TARGET:
        return None
    return _checked_name(policy_config)


def _checked_name(policy_config: Mapping[str, Any]) -> str:
    """``policy.name``, or ConfigError naming it and the names published under ``policy.artifact_root``."""
    try:
        return check_name(policy_config.get("name"), "policy.name")
    except ConfigError as err:
        root = policy_config.get("artifact_root")
        if not isinstance(root, str | Path) or not str(root):
            raise
        raise ConfigError(f"{err} ({names_hint(root)}, under {root}/policies)") from None


def published_source(policy_config: Mapping[str, Any], env: Any, wrappers: Any,
                     build_factory: FactoryBuilder) -> VersionedFactory:
    """The VersionedFactory of the newest usable version of the published policy ``policy_config`` names
    (or of its pinned ``version``).

    An unusable latest version is logged and skipped for the one before, so a corrupt publication cannot keep
    restarted workers down. Raises ConfigError naming ``policy.name`` when no version is published yet (the
    worker refuses to start), and what loading the oldest (or the pinned) version raised when none is usable.
    """
    name = _checked_name(policy_config)
    root = policy_config.get("artifact_root")
    if not isinstance(root, str | Path) or not str(root):
        raise ConfigError(f"policy.artifact_root: expected the artifact root directory, got {root!r}")
    version = policy_config.get("version")

    def rebuild(target: PublishedPolicy) -> VersionedFactory:
        config = {**policy_config, "version": target.version}
        factory = build_factory(config, env, with_statistics(wrappers, target))
        return VersionedFactory(factory, target, rebuild, follows_latest=version is None)

    if version is not None:
        pinned = rebuild(get_policy(root, name, version))
        logger.info("serving %s (pinned: newer versions are not loaded)", describe_version(pinned.published))
        return pinned
    candidates = published_versions(root, name)
    if not candidates:
        raise ConfigError(f"policy.name: no version of policy {name!r} is published under {root}/policies/"
                          f"{name} ({names_hint(root)}); publish one first (maze-worker serves only a "
                          "published version)")
    rejected: set[int] = set()
    newest_first = candidates[::-1]
    for candidate, older in zip(newest_first, [*newest_first[1:], None], strict=True):
        try:
            source = rebuild(get_policy(root, name, candidate))
        except Exception as err:  # noqa: BLE001 - any unusable version is skipped while an older one is left
            if older is None:
                raise
            rejected.add(candidate)
            logger.error("policy %r version %d rejected at start, trying version %d: %s", name, candidate,
                         older, _brief(err))
            continue
        source.rejected_at_start = frozenset(rejected)
        logger.info("serving %s; newer versions are loaded as they are published",
                    describe_version(source.published))
        return source
    raise AssertionError("unreachable: the oldest version either loads or raises")


def describe_version(published: PublishedPolicy) -> str:
    """"policy 'cartpole' version 3 (published <time>, best evaluation return 500.0)", for the log."""
    recorded = published.best_eval_return
    return (f"policy {published.name!r} version {published.version} (published {published.created or '?'}, "
            f"best evaluation return {'not recorded' if recorded is None else f'{recorded:.1f}'})")


def with_statistics(wrappers: Any, published: PublishedPolicy) -> Any:
    """``wrappers`` with every ObservationNormalizationWrapper reading the version's normalization statistics
    (``statistics.json``), so the policy sees observations normalized as in its training."""
    statistics = published.path / STATISTICS_FILE
    if not statistics.is_file():
        return wrappers
    if isinstance(wrappers, DictConfig):
        wrappers = OmegaConf.to_container(wrappers, resolve=True)
    if isinstance(wrappers, Mapping) and "_target_" not in wrappers:
        return {key: _pointed(key, value, statistics) for key, value in wrappers.items()}
    if isinstance(wrappers, list):
        return [_pointed(item.get("_target_"), item, statistics) if isinstance(item, Mapping) else item
                for item in wrappers]
    if isinstance(wrappers, Mapping):
        return _pointed(wrappers.get("_target_"), wrappers, statistics)
    return wrappers


def _pointed(target: Any, arguments: Any, statistics: Path) -> Any:
    from maze_engine.wrappers.observation.normalization import ObservationNormalizationWrapper

    if not isinstance(arguments, Mapping) or not isinstance(target, str):
        return arguments
    try:
        if resolve_target(target) is not ObservationNormalizationWrapper:
            return arguments
    except ConfigError:
        return arguments
    return {**arguments, "statistics_dump": str(statistics)}


class ReloadOutcome(StrEnum):
    """The ``outcome`` label of the reloads metric."""

    LOADED = "loaded"
    REJECTED = "rejected"


class PolicyReloadMetrics:
    """Current published version and reloads by outcome, in the worker's registry."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.version = Gauge("maze_worker_policy_version",
                             "Published policy version that new episodes get (0: not a published policy)",
                             registry=registry)
        self.reloads = Counter("maze_worker_policy_reloads", "Newer policy versions loaded or rejected",
                               ["outcome"], registry=registry)


_LATEST = 0
"""Loader request: look up the latest published version (after a (re)connect)."""
_STOP = -1


class PolicyReloader:
    """Loads newer versions of the served policy on a background thread; see the module docstring.

    ``on_announcement``, ``check_latest`` and ``take_ready`` are called from the service thread only; the
    loader thread touches nothing but the files and its own result slot.
    """

    def __init__(self, current: VersionedFactory, metrics: PolicyReloadMetrics | None = None,
                 thread_name: str = "maze-worker-policy-loader") -> None:
        self.name = current.name
        self.artifact_root = current.published.path.parents[2]
        self.current = current
        self.metrics = metrics
        self.rejected: set[int] = set(current.rejected_at_start)
        """Versions that failed to load; never tried again."""
        self._newest = max({current.policy_version, *current.rejected_at_start})
        """Highest version loaded, being loaded or rejected: older announcements are ignored."""
        self._lock = threading.Lock()
        self._ready: VersionedFactory | None = None
        self._requests: queue.Queue[int] = queue.Queue()
        self._thread_name = thread_name
        self._thread: threading.Thread | None = None
        if metrics is not None:
            metrics.version.set(current.policy_version)

    # -- service thread ------------------------------------------------------------------------------------

    def on_announcement(self, body: bytes) -> None:
        """An announcement from ``<prefix>.policies``: load the version if it is of this policy and newer."""
        try:
            announcement = decode_announcement(body)
        except AnnouncementError as err:
            logger.warning("ignoring a policy announcement that cannot be read: %s", err)
            return
        if announcement.name != self.name:
            return
        self._request(announcement.version)

    def check_latest(self) -> None:
        """Look for a newer version in the artifact root (on the loader thread): announcements may have been
        missed while disconnected."""
        self._submit(_LATEST)

    def take_ready(self) -> VersionedFactory | None:
        """The newly loaded version, once, or None; call at a safe point between batches and swap it in."""
        if self._ready is None:  # the common case, without the lock
            return None
        with self._lock:
            ready, self._ready = self._ready, None
        if ready is None or ready.policy_version <= self.current.policy_version:
            return None
        logger.info("%s loaded: new episodes get it, running ones finish on version %d",
                    describe_version(ready.published), self.current.policy_version)
        self.current = ready
        if self.metrics is not None:
            self.metrics.version.set(ready.policy_version)
            self.metrics.reloads.labels(ReloadOutcome.LOADED.value).inc()
        return ready

    def close(self, timeout: float = 10.0) -> None:
        """Stop the loader thread (a load in progress finishes first, up to ``timeout``)."""
        thread = self._thread
        if thread is None:
            return
        self._requests.put(_STOP)
        thread.join(timeout)
        self._thread = None

    def _request(self, version: int) -> None:
        with self._lock:
            if version <= self._newest:
                return
            self._newest = version
        self._submit(version)

    def _submit(self, request: int) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name=self._thread_name, daemon=True)
            self._thread.start()
        self._requests.put(request)

    # -- loader thread -------------------------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            request = self._requests.get()
            if request == _STOP:
                return
            try:
                self._handle(request)
            except Exception:  # noqa: BLE001 - the loader must outlive any one bad request
                logger.exception("policy %r: looking for a newer version failed", self.name)

    def _handle(self, request: int) -> None:
        if request == _LATEST:
            versions = published_versions(self.artifact_root, self.name)
            if not versions:
                return
            with self._lock:
                if versions[-1] <= self._newest:
                    return
                self._newest = versions[-1]
            request = versions[-1]
        with self._lock:
            loaded = max(self.current.policy_version, self._ready.policy_version if self._ready else 0)
        if request <= loaded or request in self.rejected:
            return
        self._load(request)

    def _load(self, version: int) -> None:
        try:
            published = get_policy(self.artifact_root, self.name, version)
            source = self.current.rebuild(published)
        except Exception as err:  # noqa: BLE001 - any unusable version is rejected, the current one serves on
            self.rejected.add(version)
            logger.error("policy %r version %d rejected, version %d keeps serving: %s", self.name, version,
                         self.current.policy_version, _brief(err))
            if self.metrics is not None:
                self.metrics.reloads.labels(ReloadOutcome.REJECTED.value).inc()
            return
        with self._lock:
            if self._ready is None or self._ready.policy_version < version:
                self._ready = source


def _brief(err: BaseException) -> str:
    text = f"{type(err).__name__}: {err}"
    return text if len(text) <= 500 else text[:497] + "..."
