"""What travels on ``<prefix>.policies``: "a version is published" and "the release state of a name changed".

A version announcement ``{v: 1, name, version, path}`` carries the version directory relative to the
artifact root, so workers that mount the root elsewhere still find the files. A release announcement
``{v: 1, kind: "release", name, generation}`` only says that ``<root>/policies/<name>/release.json`` changed
(``worker.policy_store.releases``): the store is the truth, and a worker reads it again on hearing one.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import msgpack

from maze_engine.core.errors import ConfigError
from worker.errors import WorkerError
from worker.policy_store.store import PublishedPolicy, check_name, relative_version_path
from worker.wire.checks import describe

ANNOUNCEMENT_VERSION = 1
RELEASE_KIND = "release"


class AnnouncementError(WorkerError, ValueError):
    """An announcement body is not a v1 announcement; ``field`` names the culprit ("body" for all of it)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


@dataclass(frozen=True)
class Announcement:
    """"Version ``version`` of ``name`` is published at ``path`` (relative to the artifact root)"."""

    name: str
    version: int
    path: str

    def resolve(self, artifact_root: str | Path) -> Path:
        """The version directory under this worker's mount of the artifact root."""
        return Path(artifact_root) / PurePosixPath(self.path)


@dataclass(frozen=True)
class ReleaseAnnouncement:
    """"The release state of ``name`` changed (now at ``generation``)": read it again from the store."""

    name: str
    generation: int


def encode_announcement(published: PublishedPolicy) -> bytes:
    """The msgpack body announcing ``published``: ``{v: 1, name, version, path}`` (path relative to root)."""
    return msgpack.packb({"v": ANNOUNCEMENT_VERSION, "name": published.name, "version": published.version,
                          "path": published.relative_path})


def encode_release_announcement(name: str, generation: int) -> bytes:
    """The msgpack body announcing a changed release state: ``{v: 1, kind: "release", name, generation}``."""
    return msgpack.packb({"v": ANNOUNCEMENT_VERSION, "kind": RELEASE_KIND, "name": name,
                          "generation": generation})


def decode_any(body: bytes) -> Announcement | ReleaseAnnouncement:
    """A version or a release announcement; raise AnnouncementError naming the first offending field."""
    obj = _unpack(body)
    if obj.get("kind") is None:
        return _version_announcement(obj)
    if obj["kind"] != RELEASE_KIND:
        raise AnnouncementError("kind", f"kind: expected {RELEASE_KIND!r} or none, got "
                                        f"{describe(obj['kind'])}")
    generation = obj.get("generation")
    if type(generation) is not int or generation < 0:
        raise AnnouncementError("generation", f"generation: expected an integer >= 0, got "
                                              f"{describe(generation)}")
    return ReleaseAnnouncement(_name(obj), generation)


def decode_announcement(body: bytes) -> Announcement:
    """Decode a version announcement; raise AnnouncementError naming the first offending field."""
    return _version_announcement(_unpack(body))


def _unpack(body: bytes) -> dict[object, object]:
    try:
        obj = msgpack.unpackb(body, raw=False, strict_map_key=True)
    except Exception as err:  # corrupt msgpack surfaces as ValueError, TypeError, StackError, ...
        raise AnnouncementError("body", f"body: expected a msgpack map, got undecodable bytes "
                                        f"({type(err).__name__})") from None
    if not isinstance(obj, dict):
        raise AnnouncementError("body", f"body: expected a msgpack map, got {type(obj).__name__}")
    if type(obj.get("v")) is not int or obj["v"] != ANNOUNCEMENT_VERSION:
        raise AnnouncementError("v", f"v: expected announcement version {ANNOUNCEMENT_VERSION}, "
                                     f"got {describe(obj.get('v'))}")
    return obj


def _name(obj: dict[object, object]) -> str:
    try:
        return check_name(obj.get("name"))
    except ConfigError as err:
        raise AnnouncementError("name", str(err)) from None


def _version_announcement(obj: dict[object, object]) -> Announcement:
    name = _name(obj)
    version = obj.get("version")
    if type(version) is not int or version < 1:
        raise AnnouncementError("version", f"version: expected an integer >= 1, got {describe(version)}")
    path = obj.get("path")
    expected = relative_version_path(name, version)
    if path != expected:
        raise AnnouncementError("path", f"path: expected {expected!r} (relative to the artifact root), "
                                        f"got {describe(path)}")
    return Announcement(name, version, expected)


def release_event_routing_key(name: str, event: str) -> str:
    """``policy.<name>.<event>`` on ``<prefix>.events`` (a topic exchange; jobs use ``job.<id>.<event>``)."""
    return f"policy.{name}.{event}"


def encode_release_event(event: str, name: str, **fields: object) -> bytes:
    """A release event's body: ``{v: 1, event, name, time, ...fields}`` (``released``, ``promoted``,
    ``rolled_back``, ``shadowed``, ``shadow_stopped``; a gate decision adds ``by``, ``reason`` and the
    ``figures`` behind it)."""
    body: bytes = msgpack.packb({"v": ANNOUNCEMENT_VERSION, "event": event, "name": name, "time": time.time(),
                                 **fields})
    return body
