"""The release state of a published policy: the stable version, the canary beside it and the canary's share,
and a shadow candidate (computed beside the served version for every new episode, never answered with).

``<artifact_root>/policies/<name>/release.json`` is the fleet's one truth: ``maze-worker policies
release|promote|rollback`` and the automatic gate change it (read, check, write under an exclusive lock of
``.release.lock``, written to a temporary file and renamed into place), then announce the change on
``<prefix>.policies``; a worker reads it at start, on every announcement and after every reconnect. Each
change raises ``generation``, which the gate's decisions compare and set (the first worker to decide wins).
Without a release state a worker serves the latest published version, as before releases existed.
"""

from __future__ import annotations

import fcntl
import json
import math
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from worker.policy_store.store import PolicyStoreError, names_hint, policy_dir, published_versions

RELEASE_FILE = "release.json"
LOCK_FILE = ".release.lock"
DEFAULT_MIN_EPISODES = 50
DEFAULT_CONFIDENCE = 0.95


class ReleaseError(PolicyStoreError):
    """A release, promotion or rollback that cannot be done (nothing changed); the message names why."""


@dataclass(frozen=True)
class AutoGate:
    """The automatic gate: decide after ``min_episodes`` finished on each side, at ``confidence``."""

    min_episodes: int = DEFAULT_MIN_EPISODES
    confidence: float = DEFAULT_CONFIDENCE


@dataclass(frozen=True)
class ReleaseState:
    """What serves ``name``: ``stable`` to every new episode but the ``share`` that gets ``canary``."""

    name: str
    stable: int
    canary: int | None = None
    share: float = 0.0
    auto: AutoGate | None = None
    generation: int = 1
    previous: int | None = None
    """The stable version before the last promotion (what ``rollback`` returns to without a canary)."""
    updated: str = ""
    last_decision: dict[str, Any] | None = None
    """The last promotion or rollback: ``{action, by, reason, figures, time}``."""
    shadow: int | None = None
    """A version that acts in shadow beside whichever version serves an episode: its actions are computed and
    compared, never returned (``worker/episodes/shadow_candidate.py``). A version that comes to serve (stable
    or canary) leaves the shadow (``_write``)."""

    def to_plain(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_plain(cls, obj: Any, path: Path) -> ReleaseState:
        try:
            auto = obj.get("auto")
            state = cls(name=str(obj["name"]), stable=int(obj["stable"]),
                         canary=None if obj.get("canary") is None else int(obj["canary"]),
                         share=float(obj.get("share") or 0.0),
                         auto=None if auto is None else AutoGate(int(auto["min_episodes"]),
                                                                 float(auto["confidence"])),
                         generation=int(obj["generation"]),
                         previous=None if obj.get("previous") is None else int(obj["previous"]),
                         updated=str(obj.get("updated", "")), last_decision=obj.get("last_decision"),
                         shadow=None if obj.get("shadow") is None else int(obj["shadow"]))
        except (AttributeError, KeyError, TypeError, ValueError) as err:
            raise ReleaseError(f"{path}: not a release state ({type(err).__name__}: {err})") from None
        return state


def release_path(artifact_root: str | Path, name: str) -> Path:
    return policy_dir(artifact_root, name) / RELEASE_FILE


def read_release(artifact_root: str | Path, name: str) -> ReleaseState | None:
    """The release state of ``name``, None when none was ever made; ReleaseError when it is unreadable."""
    path = release_path(artifact_root, name)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except OSError as err:
        raise ReleaseError(f"{path} cannot be read ({err})") from err
    try:
        obj = json.loads(text)
    except ValueError as err:
        raise ReleaseError(f"{path}: not JSON ({err})") from None
    if not isinstance(obj, dict):
        raise ReleaseError(f"{path}: expected a JSON object")
    return ReleaseState.from_plain(obj, path)


# ------------------------------------------------------------------------------------------------ changes


def check_share(share: Any) -> float:
    """``share`` if it is a number strictly between 0 and 1, else ReleaseError naming ``canary``."""
    if isinstance(share, bool) or not isinstance(share, int | float) or not 0.0 < share < 1.0:
        raise ReleaseError(f"canary: expected a share of new episodes strictly between 0 and 1, got "
                           f"{share!r}")
    return float(share)


def check_auto(auto: AutoGate) -> AutoGate:
    if type(auto.min_episodes) is not int or auto.min_episodes < 2:
        raise ReleaseError(f"min_episodes: expected an integer >= 2, got {auto.min_episodes!r}")
    if not (isinstance(auto.confidence, float) and 0.5 <= auto.confidence < 1.0):
        raise ReleaseError(f"confidence: expected a number in [0.5, 1), got {auto.confidence!r}")
    return auto


def release_canary(artifact_root: str | Path, name: str, version: int, share: float,
                   auto: AutoGate | None = None) -> ReleaseState:
    """Serve ``version`` of ``name`` to ``share`` of new episodes beside the stable version.

    The first release of a name takes as stable the version served until then (the latest published one
    other than ``version``). Raises ReleaseError, changing nothing, for an unknown name or version, a share
    outside (0, 1), a canary already running, or ``version`` being the stable one.
    """
    share = check_share(share)
    if auto is not None:
        check_auto(auto)
    with _locked(artifact_root, name) as versions:
        _check_version(artifact_root, name, version, versions)
        state = read_release(artifact_root, name)
        if state is None:
            others = [other for other in versions if other != version]
            if not others:
                raise ReleaseError(f"version: {name!r} has no other published version than {version} to "
                                   "keep as the stable one; publish it as the first version instead")
            state = ReleaseState(name, others[-1], generation=0)
        if state.canary is not None:
            raise ReleaseError(f"{name!r}: version {state.canary} already runs as a canary for "
                               f"{state.share:g} of new episodes; promote it or roll it back first")
        if version == state.stable:
            raise ReleaseError(f"version: {version} is already the stable version of {name!r}")
        return _write(artifact_root, replace(state, canary=version, share=share, auto=auto,
                                             last_decision=None))


def promote(artifact_root: str | Path, name: str, version: int, by: str = "operator",
            reason: str = "", figures: dict[str, Any] | None = None) -> ReleaseState:
    """Make ``version`` the stable version of ``name`` at once (a running canary must be that version)."""
    with _locked(artifact_root, name) as versions:
        _check_version(artifact_root, name, version, versions)
        state = read_release(artifact_root, name) or ReleaseState(name, versions[-1], generation=0)
        return _promoted(artifact_root, state, version, _decision("promote", by, reason, figures))


def rollback(artifact_root: str | Path, name: str, by: str = "operator", reason: str = "",
             figures: dict[str, Any] | None = None) -> ReleaseState:
    """Stop the canary of ``name`` (its running episodes finish on it); without one, go back to the stable
    version before the last promotion. ReleaseError when there is nothing to roll back."""
    with _locked(artifact_root, name) as versions:
        state = read_release(artifact_root, name)
        if state is None or state.canary is None and state.previous is None:
            raise ReleaseError(f"{name!r}: nothing to roll back (no canary runs and no earlier stable "
                               "version is recorded)")
        if state.canary is None and state.previous not in versions:
            raise ReleaseError(f"{name!r}: the earlier stable version {state.previous} is no longer "
                               "published")
        return _rolled_back(artifact_root, state, _decision("rollback", by, reason, figures))


def decide(artifact_root: str | Path, name: str, generation: int, action: str, by: str, reason: str,
           figures: dict[str, Any]) -> ReleaseState | None:
    """The gate's ``action`` ("promote" or "rollback") on the canary of release ``generation``; None when
    the state moved on meanwhile (another worker decided first, or an operator acted)."""
    with _locked(artifact_root, name):
        state = read_release(artifact_root, name)
        if state is None or state.generation != generation or state.canary is None:
            return None
        decision = _decision(action, by, reason, figures)
        if action == "promote":
            return _promoted(artifact_root, state, state.canary, decision)
        return _rolled_back(artifact_root, state, decision)


def _promoted(artifact_root: str | Path, state: ReleaseState, version: int,
              decision: dict[str, Any]) -> ReleaseState:
    if state.canary is not None and state.canary != version:
        raise ReleaseError(f"version: {version} is not the canary of {state.name!r} (version {state.canary} "
                           "runs as one); promote it or roll it back first")
    decision["reason"] = decision["reason"] or f"version {version} promoted"
    previous = state.stable if state.stable != version else state.previous
    return _write(artifact_root, replace(state, stable=version, canary=None, share=0.0, auto=None,
                                         previous=previous, last_decision=decision))


def _rolled_back(artifact_root: str | Path, state: ReleaseState, decision: dict[str, Any]) -> ReleaseState:
    if state.canary is not None:
        decision["reason"] = decision["reason"] or f"canary version {state.canary} rolled back"
        return _write(artifact_root, replace(state, canary=None, share=0.0, auto=None,
                                             last_decision=decision))
    assert state.previous is not None
    decision["reason"] = decision["reason"] or f"back to version {state.previous}"
    return _write(artifact_root, replace(state, stable=state.previous, previous=None, last_decision=decision))


def start_shadow(artifact_root: str | Path, name: str, version: int) -> ReleaseState:
    """Run ``version`` of ``name`` in shadow beside what serves new episodes.

    Without a release state, the latest version serves and becomes the stable one (nothing served changes).
    Raises ReleaseError, changing nothing, for an unknown name or version, ``version`` being the one that
    serves or the running canary, or another shadow already running.
    """
    with _locked(artifact_root, name) as versions:
        _check_version(artifact_root, name, version, versions)
        state = read_release(artifact_root, name) or ReleaseState(name, versions[-1], generation=0)
        if version == state.stable:
            raise ReleaseError(f"version: {version} is the stable version of {name!r}, it serves already; "
                               "a shadow is a candidate beside it")
        if version == state.canary:
            raise ReleaseError(f"version: {version} runs as the canary of {name!r} already")
        if state.shadow is not None and state.shadow != version:
            raise ReleaseError(f"{name!r}: version {state.shadow} already runs in shadow; stop it first "
                               f"(maze-worker policies shadow {name} --stop)")
        if state.shadow == version:
            return state
        return _write(artifact_root, replace(state, shadow=version))


def stop_shadow(artifact_root: str | Path, name: str) -> ReleaseState:
    """Stop the shadow of ``name`` (ReleaseError when none runs)."""
    with _locked(artifact_root, name):
        state = read_release(artifact_root, name)
        if state is None or state.shadow is None:
            raise ReleaseError(f"{name!r}: no version runs in shadow")
        return _write(artifact_root, replace(state, shadow=None))


def follow_published(artifact_root: str | Path, name: str, version: int) -> ReleaseState | None:
    """A version published without a canary becomes stable where a release state exists and no canary runs
    (None: nothing changed, because there is no release state, or a canary runs)."""
    with _locked(artifact_root, name):
        state = read_release(artifact_root, name)
        if state is None or state.canary is not None or state.stable >= version:
            return None
        return _write(artifact_root, replace(state, stable=version, previous=state.stable,
                                             last_decision=_decision("promote", "publishing", "published "
                                                                     f"version {version}", None)))


def pin_stable(artifact_root: str | Path, name: str) -> ReleaseState | None:
    """Make sure ``name`` has a release state (stable: the latest version) before a canary is published, so
    no worker starts serving the new version to every episode meanwhile. None when nothing is published."""
    with _locked(artifact_root, name) as versions:
        state = read_release(artifact_root, name)
        if state is not None or not versions:
            return state
        return _write(artifact_root, ReleaseState(name, versions[-1], generation=0))


# ---------------------------------------------------------------------------------------------- helpers


@contextmanager
def _locked(artifact_root: str | Path, name: str) -> Iterator[list[int]]:
    """Hold the release lock of ``name``; yields its published versions."""
    directory = policy_dir(artifact_root, name)
    if not directory.is_dir():
        raise ReleaseError(unknown_name(artifact_root, name))
    with (directory / LOCK_FILE).open("a") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield published_versions(artifact_root, name)
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def unknown_name(artifact_root: str | Path, name: str) -> str:
    return f"name: no policy {name!r} is published under {Path(artifact_root) / 'policies'} " \
           f"({names_hint(artifact_root)})"


def _check_version(artifact_root: str | Path, name: str, version: Any, versions: list[int]) -> None:
    if not versions:
        raise ReleaseError(unknown_name(artifact_root, name))
    if type(version) is not int or version not in versions:
        raise ReleaseError(f"version: {name!r} has no published version {version!r} (published: "
                           f"{', '.join(map(str, versions))})")


def _decision(action: str, by: str, reason: str, figures: dict[str, Any] | None) -> dict[str, Any]:
    return {"action": action, "by": by, "reason": reason, "figures": _finite(figures),
            "time": datetime.now(UTC).isoformat(timespec="seconds")}


def _finite(value: Any) -> Any:
    """JSON has no NaN: non-finite floats become None."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_finite(item) for item in value]
    return value


def _write(artifact_root: str | Path, state: ReleaseState) -> ReleaseState:
    """Write ``state`` with the next generation (atomically: temporary file, fsync, rename). A shadow that has
    come to serve, as the stable version or the canary, acts for real now and is no longer a shadow."""
    if state.shadow in (state.stable, state.canary):
        state = replace(state, shadow=None)
    state = replace(state, generation=state.generation + 1,
                    updated=datetime.now(UTC).isoformat(timespec="seconds"))
    path = release_path(artifact_root, state.name)
    temporary = path.with_name(f".{RELEASE_FILE}.{os.getpid()}.tmp")
    with temporary.open("w", encoding="utf-8") as handle:
        json.dump(state.to_plain(), handle, indent=1)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)
    return state
