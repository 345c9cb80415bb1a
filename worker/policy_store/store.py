"""Published policies: versioned copies of trained policies under an artifact root.

``publish_policy`` copies what serving needs from a training run directory (weights, spaces, model config,
normalization statistics, the composed config) to ``<artifact_root>/policies/<name>/<version>/``. The copy is
written to a hidden temporary directory and renamed into place, so a reader sees a version completely or not
at all; the rename is also the claim of the version number (it fails when another publisher got there first,
and the next number is tried), which keeps versions consecutive and distinct between processes. A
``manifest.json`` records name, version, creation time, source run directory, the run's best evaluation
return (what the publishing gate of ``worker.policy_store.gate`` compares) and a SHA-256 per file.

Workers learn of new versions from announcements (``worker.policy_store.announcements``); which versions
serve is the release state (``worker.policy_store.releases``). Loading checks the checksums
first and then goes through ``load_torch_policy`` (``torch.load(..., weights_only=True)``).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import shutil
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from maze_engine.core.errors import ConfigError
from worker.errors import WorkerError
from worker.wire.checks import describe

POLICIES_DIR = "policies"
MANIFEST_FILE = "manifest.json"
MANIFEST_FORMAT = 1
MAX_NAME_LENGTH = 64

REQUIRED_FILES = ("state_dict.pt", "spaces.json", "model.yaml")
"""Written by ``save_torch_policy``; a policy cannot be rebuilt without any of them."""
OPTIONAL_FILES = ("statistics.json", "config.yaml")
"""Observation normalization statistics (when the env normalizes) and the composed training config."""
STATISTICS_FILE = "statistics.json"

_NAME_PATTERN = re.compile(r"[A-Za-z0-9._-]{1,64}")
_CHUNK = 1 << 20


class PolicyStoreError(WorkerError, ConfigError):
    """A published policy is missing, incomplete or corrupt; the message names the version and the file."""


@dataclass(frozen=True)
class PublishedPolicy:
    """One published version: where it lies and what its manifest says."""

    name: str
    version: int
    path: Path
    """The version directory, ``<artifact_root>/policies/<name>/<version>``."""
    created: str = ""
    """ISO 8601 UTC time of publication."""
    source_run_dir: str = ""
    checksums: Mapping[str, str] = field(default_factory=dict)
    """File name -> SHA-256 hex digest, for every file of the version."""
    best_eval_return: float | None = None
    """The training run's best evaluation return, as recorded at publication (None: none recorded)."""

    @property
    def relative_path(self) -> str:
        """The version directory relative to the artifact root (what announcements carry)."""
        return relative_version_path(self.name, self.version)


# ----------------------------------------------------------------------------------------------- names


def check_name(name: Any, field: str = "name") -> str:
    """``name`` if it is 1-64 letters, digits, '_', '-' or '.' (and not only dots); else ConfigError."""
    if not isinstance(name, str) or not _NAME_PATTERN.fullmatch(name) or set(name) == {"."}:
        raise ConfigError(f"{field}: expected 1-{MAX_NAME_LENGTH} letters, digits, '_', '-' or '.' (not only "
                          f"dots), got {describe(name)}")
    return name


def relative_version_path(name: str, version: int) -> str:
    return f"{POLICIES_DIR}/{name}/{version}"


def policy_dir(artifact_root: str | Path, name: str) -> Path:
    """``<artifact_root>/policies/<name>``: the versions of one policy."""
    return Path(artifact_root) / POLICIES_DIR / check_name(name)


# ---------------------------------------------------------------------------------------------- publish


def publish_policy(artifact_root: str | Path, name: str, run_dir: str | Path,
                   best_eval_return: float | None = None,
                   check_predecessor: Callable[[PublishedPolicy | None], None] | None = None
                   ) -> PublishedPolicy:
    """Copy a trained policy from ``run_dir`` to the next version of ``name`` under ``artifact_root``,
    recording ``best_eval_return`` in its manifest.

    Raises ConfigError naming ``name`` or ``run_dir`` when the name is invalid or the run directory lacks a
    required file. Safe to call from several processes at once: each gets its own version. Right before a
    number is claimed, ``check_predecessor`` gets the version below it (None: none), again when another
    publisher took the number first; it may raise to call the publication off (nothing is left behind).
    """
    check_name(name)
    source = Path(run_dir)
    if not source.is_dir():
        raise ConfigError(f"run_dir: expected a training run directory, got {str(source)!r} "
                          "(not a directory)")
    missing = [file for file in REQUIRED_FILES if not (source / file).is_file()]
    if missing:
        raise ConfigError(f"run_dir: expected a training run directory with {', '.join(REQUIRED_FILES)}; "
                          f"{str(source)!r} lacks {', '.join(missing)}")
    versions = policy_dir(artifact_root, name)
    versions.mkdir(parents=True, exist_ok=True)
    staging = versions / f".staging-{os.getpid()}-{uuid.uuid4().hex}"
    staging.mkdir()
    try:
        checksums: dict[str, str] = {}
        for file in REQUIRED_FILES + OPTIONAL_FILES:
            if (source / file).is_file():
                shutil.copyfile(source / file, staging / file)
                checksums[file] = file_sha256(staging / file, sync=True)
        created = datetime.now(UTC).isoformat(timespec="seconds")
        version = _next_version(versions)
        while True:
            if check_predecessor is not None:
                check_predecessor(_predecessor(versions, name, version))
            _write_manifest(staging, name, version, created, source, checksums, best_eval_return)
            _fsync_dir(staging)
            try:
                # rename(2) onto an existing non-empty directory fails: the number was taken, try the next.
                os.rename(staging, versions / str(version))
                break
            except OSError:
                if not (versions / str(version)).exists():
                    raise
                version = max(version + 1, _next_version(versions))
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    _fsync_dir(versions)
    return PublishedPolicy(name, version, versions / str(version), created, str(source.resolve()),
                           dict(checksums), _finite(best_eval_return))


def _predecessor(versions: Path, name: str, version: int) -> PublishedPolicy | None:
    """Version ``version - 1``; None when there is none or its manifest is unreadable (it serves nobody)."""
    if version <= 1:
        return None
    try:
        return read_published(versions / str(version - 1), name, version - 1)
    except PolicyStoreError:
        return None


def _finite(value: Any) -> float | None:
    """``value`` as a float when it is a finite number, else None."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return float(value)


def _next_version(versions: Path) -> int:
    numbers = [int(entry.name) for entry in versions.iterdir() if _is_version_name(entry.name)]
    return max(numbers, default=0) + 1


def _is_version_name(text: str) -> bool:
    return text.isdigit() and text.isascii() and not text.startswith("0")


def _write_manifest(directory: Path, name: str, version: int, created: str, source: Path,
                    checksums: Mapping[str, str], best_eval_return: float | None) -> None:
    manifest = {"format": MANIFEST_FORMAT, "name": name, "version": version, "created": created,
                "source_run_dir": str(source.resolve()), "best_eval_return": _finite(best_eval_return),
                "files": {file: {"sha256": digest} for file, digest in checksums.items()}}
    temporary = directory / f".{MANIFEST_FILE}.tmp"
    with temporary.open("w", encoding="utf-8") as handle:
        json.dump(manifest, handle, indent=2)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, directory / MANIFEST_FILE)


def _fsync_dir(directory: Path) -> None:
    try:
        descriptor = os.open(directory, os.O_RDONLY)
    except OSError:  # some filesystems do not open directories; the rename is still atomic there
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass
    finally:
        os.close(descriptor)


def file_sha256(path: Path, sync: bool = False) -> str:
    """SHA-256 hex digest of ``path``; ``sync`` also flushes the file to disk (before it is renamed into
    place, so a crash cannot leave a published version whose files are not written yet)."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
        if sync:
            os.fsync(handle.fileno())
    return digest.hexdigest()


# ------------------------------------------------------------------------------------------------ look up


def read_published(path: str | Path, name: str | None = None, version: int | None = None) -> PublishedPolicy:
    """The PublishedPolicy of a version directory, from its manifest; PolicyStoreError when unreadable.

    ``name`` and ``version``, when given, must match the manifest (a directory holding another policy is
    refused).
    """
    directory = Path(path)
    label = f"policy {name!r} version {version}" if name is not None else str(directory)
    manifest_path = directory / MANIFEST_FILE
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except FileNotFoundError as err:
        raise PolicyStoreError(f"{label}: {manifest_path} not found; expected a published policy "
                               "version") from err
    except (OSError, ValueError) as err:
        raise PolicyStoreError(f"{label}: {manifest_path} is not a readable JSON manifest ({err})") from err
    if not isinstance(manifest, dict):
        raise PolicyStoreError(f"{label}: {manifest_path}: expected a JSON object")
    got_name, got_version, files = manifest.get("name"), manifest.get("version"), manifest.get("files")
    if not isinstance(got_name, str) or name is not None and got_name != name:
        raise PolicyStoreError(f"{label}: {manifest_path}: name: expected {name!r}, got {got_name!r}")
    if type(got_version) is not int or version is not None and got_version != version:
        raise PolicyStoreError(f"{label}: {manifest_path}: version: expected {version}, got {got_version!r}")
    if not isinstance(files, dict) or not all(
            isinstance(entry, dict) and isinstance(entry.get("sha256"), str) for entry in files.values()):
        raise PolicyStoreError(f"{label}: {manifest_path}: files: expected a map file -> {{sha256: hex}}")
    return PublishedPolicy(got_name, got_version, directory, str(manifest.get("created", "")),
                           str(manifest.get("source_run_dir", "")),
                           {str(file): entry["sha256"] for file, entry in files.items()},
                           _finite(manifest.get("best_eval_return")))


def published_versions(artifact_root: str | Path, name: str) -> list[int]:
    """Version numbers of ``name`` that are completely published (have a manifest), ascending."""
    versions = policy_dir(artifact_root, name)
    try:
        entries = list(versions.iterdir())
    except FileNotFoundError:
        return []
    return sorted(int(entry.name) for entry in entries
                  if _is_version_name(entry.name) and (entry / MANIFEST_FILE).is_file())


def published_names(artifact_root: str | Path) -> list[str]:
    """Names with at least one completely published version under ``artifact_root``, sorted."""
    try:
        entries = list((Path(artifact_root) / POLICIES_DIR).iterdir())
    except OSError:
        return []
    return sorted(entry.name for entry in entries
                  if _NAME_PATTERN.fullmatch(entry.name) and published_versions(artifact_root, entry.name))


def names_hint(artifact_root: str | Path) -> str:
    """"published there: a, b" or "nothing is published there yet", for errors about ``policy.name``."""
    names = published_names(artifact_root)
    return f"published there: {', '.join(names)}" if names else "nothing is published there yet"


def get_policy(artifact_root: str | Path, name: str, version: int) -> PublishedPolicy:
    """Version ``version`` of ``name``; PolicyStoreError when it is not published or its manifest broken."""
    if type(version) is not int or version < 1:
        raise ConfigError(f"version: expected an integer >= 1, got {version!r}")
    return read_published(policy_dir(artifact_root, name) / str(version), name, version)


def latest_policy(artifact_root: str | Path, name: str) -> PublishedPolicy | None:
    """The highest published version of ``name``, or None when there is none yet."""
    versions = published_versions(artifact_root, name)
    if not versions:
        return None
    return get_policy(artifact_root, name, versions[-1])


def verify_policy(published: PublishedPolicy) -> None:
    """Check that every required file is present and every file matches its manifest checksum."""
    label = f"policy {published.name!r} version {published.version}"
    missing = [file for file in REQUIRED_FILES if file not in published.checksums]
    if missing:
        raise PolicyStoreError(f"{label}: the manifest lists no {', '.join(missing)}")
    for file, expected in published.checksums.items():
        path = published.path / file
        try:
            actual = file_sha256(path)
        except OSError as err:
            raise PolicyStoreError(f"{label}: {path} cannot be read ({err})") from err
        if actual != expected:
            raise PolicyStoreError(f"{label}: {path} does not match its manifest checksum (the file is "
                                   "corrupt or was changed after publication)")


def load_published_policy(name: str, artifact_root: str | Path, version: int | None = None,
                          action_spaces_dict: Mapping[Any, Any] | None = None,
                          observation_spaces_dict: Mapping[Any, Any] | None = None,
                          device: str = "cpu") -> Any:
    """The TorchPolicy of version ``version`` (None: the latest) of ``name``, checksums verified first.

    Usable as a Hydra ``_target_`` (``conf/policy/published_policy.yaml``); the env's spaces must equal the
    trained ones. Raises ConfigError naming ``policy.name`` when nothing is published under that name.
    """
    check_name(name, "policy.name")
    if version is None:
        published = latest_policy(artifact_root, name)
        if published is None:
            raise ConfigError(f"policy.name: no version of policy {name!r} is published under "
                              f"{policy_dir(artifact_root, name)} ({names_hint(artifact_root)}); publish one "
                              "first")
    else:
        published = get_policy(artifact_root, name, version)
    return load_version(published, action_spaces_dict, observation_spaces_dict, device)


def load_version(published: PublishedPolicy, action_spaces_dict: Mapping[Any, Any] | None = None,
                 observation_spaces_dict: Mapping[Any, Any] | None = None, device: str = "cpu") -> Any:
    """Verify ``published`` and rebuild its TorchPolicy (weights only; spaces checked against the given)."""
    from maze_engine.policies.torch_io import load_torch_policy

    verify_policy(published)
    return load_torch_policy(published.path, action_spaces_dict=action_spaces_dict,
                             observation_spaces_dict=observation_spaces_dict, device=device)
