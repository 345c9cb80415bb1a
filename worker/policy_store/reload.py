"""Hot reload of a published policy: an agent worker picks up newer versions and release changes without a
restart.

The service gives the ``VersionedFactory`` it serves (``worker.policy_store.versioned``) to a
``PolicyReloader``, which hears announcements on ``<prefix>.policies`` (and checks the artifact root after
every (re)connect, for announcements missed while disconnected) and loads on its own thread: reading files and
building nets never stalls the service loop.

- Without a release state, a newer version is loaded; the service takes it between batches (``take_ready``)
  and hands it to the EpisodeTable, where new episodes get it and running ones finish on theirs.
- With one (``worker.policy_store.releases``: a stable version, maybe a canary beside it), every
  announcement of the name makes the loader read it again; a changed state is loaded as a ``ReleasePlan``
  (the stable and the canary source, reused when already loaded) that the service takes (``take_plan``).

A version that cannot be loaded (missing or corrupt files, weights that do not fit, spaces other than the
served env's) is logged with the reason, counted, remembered as rejected, and what serves keeps serving.
"""

from __future__ import annotations

import logging
import queue
import threading
from dataclasses import dataclass
from enum import StrEnum

from prometheus_client import CollectorRegistry, Counter, Gauge

from worker.policy_store.announcements import AnnouncementError, ReleaseAnnouncement, decode_any
from worker.policy_store.releases import ReleaseError, ReleaseState, read_release
from worker.policy_store.store import get_policy, published_versions
from worker.policy_store.versioned import VersionedFactory, brief, describe_version

logger = logging.getLogger(__name__)


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
        self.canary_version = Gauge("maze_worker_canary_version", "Canary version (0: none)",
                                    registry=registry)
        self.canary_share = Gauge("maze_worker_canary_share", "Share of new episodes the canary gets",
                                  registry=registry)
        self.shadow_version = Gauge("maze_worker_shadow_version", "Version running in shadow (0: none)",
                                    registry=registry)


@dataclass(frozen=True)
class ReleasePlan:
    """A release state, loaded: new episodes get ``stable``, but ``state.share`` of them ``canary``;
    ``shadow`` acts beside them, unanswered."""

    state: ReleaseState
    stable: VersionedFactory
    canary: VersionedFactory | None
    shadow: VersionedFactory | None = None


_LATEST = 0
"""Loader request: look up the latest published version or the release state (after a (re)connect)."""
_RELEASE = -2
"""Loader request: read the release state again."""
_STOP = -1


class PolicyReloader:
    """Loads newer versions of the served policy, or its release plans, on a background thread; see the
    module docstring.

    ``on_announcement``, ``check_latest``, ``take_ready`` and ``take_plan`` are called from the service thread
    only; the loader thread touches nothing but the files and its own result slots.
    """

    def __init__(self, current: VersionedFactory, metrics: PolicyReloadMetrics | None = None,
                 thread_name: str = "maze-worker-policy-loader") -> None:
        self.name = current.name
        self.artifact_root = current.published.path.parents[2]
        self.current = current
        self.canary: VersionedFactory | None = None
        """The canary beside ``current`` while a release runs one."""
        self.shadow: VersionedFactory | None = None
        """The version in shadow while a release runs one."""
        self.release: ReleaseState | None = None
        """The release state served, once one was taken."""
        self.metrics = metrics
        self.rejected: set[int] = set(current.rejected_at_start)
        """Versions that failed to load; never tried again."""
        self._newest = max({current.policy_version, *current.rejected_at_start})
        """Highest version loaded, being loaded or rejected: older announcements are ignored."""
        self._released = False
        """Whether the name has a release state: then announcements only make the loader read it again."""
        self._plan_generation = 0
        """Generation of the newest release plan loaded (or being loaded)."""
        self._lock = threading.Lock()
        self._ready: VersionedFactory | None = None
        self._ready_plan: ReleasePlan | None = None
        self._requests: queue.Queue[int] = queue.Queue()
        self._thread_name = thread_name
        self._thread: threading.Thread | None = None
        if metrics is not None:
            metrics.version.set(current.policy_version)

    # -- service thread ------------------------------------------------------------------------------------

    def on_announcement(self, body: bytes) -> None:
        """An announcement from ``<prefix>.policies``: a newer version of this policy is loaded, a changed
        release state (or any version while the name has one) makes the loader read the release state."""
        try:
            announcement = decode_any(body)
        except AnnouncementError as err:
            logger.warning("ignoring a policy announcement that cannot be read: %s", err)
            return
        if announcement.name != self.name:
            return
        if isinstance(announcement, ReleaseAnnouncement) or self._released:
            self._submit(_RELEASE)
            return
        self._request(announcement.version)

    def check_latest(self) -> None:
        """Look for a newer version or a changed release state in the artifact root (on the loader thread):
        announcements may have been missed while disconnected."""
        self._submit(_LATEST)

    def take_ready(self) -> VersionedFactory | None:
        """The newly loaded version, once, or None; call at a safe point between batches and swap it in."""
        if self._ready is None:  # the common case, without the lock
            return None
        with self._lock:
            ready, self._ready = self._ready, None
        if ready is None or ready.policy_version <= self.current.policy_version or self._released:
            return None
        logger.info("%s loaded: new episodes get it, running ones finish on version %d",
                    describe_version(ready.published), self.current.policy_version)
        self.current = ready
        if self.metrics is not None:
            self.metrics.version.set(ready.policy_version)
            self.metrics.reloads.labels(ReloadOutcome.LOADED.value).inc()
        return ready

    def take_plan(self) -> ReleasePlan | None:
        """The newly loaded release plan, once, or None; call between batches and serve it."""
        if self._ready_plan is None:
            return None
        with self._lock:
            plan, self._ready_plan = self._ready_plan, None
        if plan is None or self.release is not None and plan.state.generation <= self.release.generation:
            return None
        state = plan.state
        canary = f"; canary version {state.canary} for {state.share:g} of new episodes" \
            if plan.canary is not None else ""
        gated = " (automatic gate)" if plan.canary is not None and state.auto else ""
        shadow = f"; version {state.shadow} in shadow" if plan.shadow is not None else ""
        logger.info("release of policy %r, generation %d: stable version %d%s%s%s", self.name,
                    state.generation, state.stable, canary, gated, shadow)
        self.current, self.canary, self.shadow, self.release = plan.stable, plan.canary, plan.shadow, state
        if self.metrics is not None:
            self.metrics.version.set(plan.stable.policy_version)
            self.metrics.canary_version.set(0 if plan.canary is None else plan.canary.policy_version)
            self.metrics.canary_share.set(0.0 if plan.canary is None else state.share)
            self.metrics.shadow_version.set(0 if plan.shadow is None else plan.shadow.policy_version)
        return plan

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
        if request in (_LATEST, _RELEASE):
            try:
                state = read_release(self.artifact_root, self.name)
            except ReleaseError as err:
                logger.error("policy %r: the release state cannot be read, serving on as before: %s",
                             self.name, err)
                return
            if state is not None:
                self._released = True
                self._load_plan(state)
                return
            if request == _RELEASE:
                return
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
        source = self._build(version)
        if source is None:
            return
        with self._lock:
            if self._ready is None or self._ready.policy_version < version:
                self._ready = source

    def _load_plan(self, state: ReleaseState) -> None:
        """Load the stable, canary and shadow sources of ``state`` (when newer than what was loaded); a shadow
        that cannot be loaded is left out (logged), what serves does not depend on it."""
        served = self.release.generation if self.release is not None else 0
        if state.generation <= max(served, self._plan_generation):
            return
        self._plan_generation = state.generation
        stable = self._build(state.stable)
        if stable is None:
            return  # what serves keeps serving; the rejection is logged and counted
        canary = None if state.canary is None else self._build(state.canary)
        shadow = None if state.shadow is None else self._build(state.shadow)
        plan = ReleasePlan(state, stable, canary, shadow)
        with self._lock:
            if self._ready_plan is None or self._ready_plan.state.generation < state.generation:
                self._ready_plan = plan

    def _build(self, version: int) -> VersionedFactory | None:
        """The source of ``version``: one served already, else loaded; None (logged, counted): unusable."""
        for source in (self.current, self.canary, self.shadow):
            if source is not None and source.policy_version == version:
                return source
        if version in self.rejected:
            return None
        try:
            return self.current.rebuild(get_policy(self.artifact_root, self.name, version))
        except Exception as err:  # noqa: BLE001 - any unusable version is rejected, the current one serves on
            self.rejected.add(version)
            logger.error("policy %r version %d rejected, version %d keeps serving: %s", self.name, version,
                         self.current.policy_version, brief(err))
            if self.metrics is not None:
                self.metrics.reloads.labels(ReloadOutcome.REJECTED.value).inc()
            return None
