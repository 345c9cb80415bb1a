"""What a value in a job's config may say: class paths from ``jobs.allowed_targets`` only, paths inside the
artifact root only, names without import or path tricks.

A config value reaches code in three ways, and each has its rule (docs/jobs.md, "What a job message may ask"):

- a **class path** (``_target_``, a wrapper's key, a dotted string in a list) is imported and called by the
  engine: it must start with one of ``jobs.allowed_targets`` (module prefixes such as ``maze_engine.``) and
  name a class or function defined there, not one a module of that package merely imported;
- a **path** (a key named like ``input_dir``, ``statistics_dump``, ``*_dir``, ``*_path``, ``*_file``...) is
  read or written: it must resolve (symbolic links followed) inside the artifact root;
- a **name** (``env.name``, ``policy.name``) is looked up: letters, digits and ``. _ - /`` only, so a
  gymnasium id cannot name a module to import (``module:Env-v0``) and a policy name cannot climb out of its
  directory.
"""

from __future__ import annotations

import importlib
import re
import types
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

from worker.wire.checks import describe

TARGET_KEY = "_target_"
ACTIVATION_KEY = "non_lin"
NAME_KEY = "name"
PATH_KEYS = frozenset({"path", "dir", "file", "dataset", "checkpoint", "statistics_dump"})
PATH_SUFFIXES = ("_dir", "_path", "_file", "_root", "_dump", "_dataset", "_checkpoint")

CLASS_PATH_PATTERN = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)+")
PREFIX_PATTERN = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*\.?")
_ACTIVATION_PATTERN = re.compile(r"[a-z_]+|torch\.nn\.[A-Z][A-Za-z0-9]*")
"""A short activation name (``tanh``) or a class of ``torch.nn`` (``torch.nn.ReLU``), built without
arguments."""
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._/-]{0,127}")
DATASET_KEY = "dataset"
STREAM = "stream:"
"""``dataset=stream:<prefix>``: the experience stream of an agent-worker prefix (``worker.jobs.datasets``)."""
DATASETS_DIR = "datasets"
"""Where a bare Minari id (``cartpole/expert-v0``) in ``dataset`` resolves: ``<artifact root>/datasets/``."""
MINARI_ID_PATTERN = re.compile(r"(?:[A-Za-z0-9_-]+/)?[A-Za-z0-9_-]+-v[0-9]+")


def is_path_key(key: str) -> bool:
    """True for a config key whose value the engine reads or writes as a file or directory."""
    return key in PATH_KEYS or key.endswith(PATH_SUFFIXES)


def looks_like_class_path(value: Any) -> bool:
    return isinstance(value, str) and CLASS_PATH_PATTERN.fullmatch(value) is not None


class ValueRules:
    """The rules of the module docstring for one artifact root and one list of allowed class-path prefixes.

    Each check returns None when the value may be used, else what was expected (for an error message that the
    caller prefixes with the key).
    """

    def __init__(self, artifact_root: str | Path, allowed_targets: Sequence[str]) -> None:
        self.root = Path(artifact_root).resolve()
        self.allowed_targets = tuple(allowed_targets)

    # -- class paths --------------------------------------------------------------------------------------

    def _allowed(self, path: str) -> bool:
        for prefix in self.allowed_targets:
            package = prefix.rstrip(".")
            if path == package or path.startswith(package + "."):
                return True
        return False

    def target_problem(self, value: Any) -> str | None:
        """None if ``value`` is a class path the engine may import and call."""
        expected = f"expected a class path under jobs.allowed_targets ({', '.join(self.allowed_targets)})"
        if not isinstance(value, str) or not CLASS_PATH_PATTERN.fullmatch(value):
            return f"{expected}, got {_short(value)}"
        if any(part.startswith("_") for part in value.split(".")) or not self._allowed(value):
            return f"{expected}, got {_short(value)}"
        defined_in = _defined_in(value)
        if defined_in is None:
            return f"{expected} that names an importable class or function, got {_short(value)}"
        if not self._allowed(defined_in):
            return f"{expected}, got {_short(value)}, which is {defined_in}'s (imported there, not defined)"
        return None

    def activation_problem(self, value: Any) -> str | None:
        """None if ``value`` names an activation (a short name, a ``torch.nn`` class or an allowed class)."""
        if isinstance(value, str) and _ACTIVATION_PATTERN.fullmatch(value):
            return None
        if self.target_problem(value) is None:
            return None
        return f"expected an activation such as tanh, relu or torch.nn.ReLU, got {_short(value)}"

    # -- paths ---------------------------------------------------------------------------------------------

    def confine(self, value: Any, base: Path | None = None) -> Path | None:
        """``value`` as an absolute path inside the artifact root; raises ValueError saying what was expected.

        A relative path is relative to ``base`` (the artifact root unless given); an empty value (unset) gives
        None.
        """
        expected = "expected a path inside the artifact root"  # (its location may come from the environment)
        if value is None or value == "":
            return None
        if not isinstance(value, str) or "\x00" in value:
            raise ValueError(f"{expected}, got {_short(value)}")
        if ".." in Path(value).parts or value.startswith("~"):
            raise ValueError(f"{expected} ('..' and '~' are refused), got {_short(value)}")
        path = Path(value)
        if not path.is_absolute():
            path = (base or self.root) / path
        resolved = path.resolve()
        if not resolved.is_relative_to(self.root):
            raise ValueError(f"{expected} (relative paths are relative to it), got {_short(value)}")
        return resolved

    def path_problem(self, value: Any, base: Path | None = None) -> str | None:
        try:
            self.confine(value, base)
        except ValueError as err:
            return str(err)
        return None

    def dataset_problem(self, value: Any, base: Path | None = None) -> str | None:
        """None if ``value`` is ``stream:<prefix>`` with a safe prefix, or a path (or Minari id) inside the
        artifact root."""
        if isinstance(value, str) and value.startswith(STREAM):
            return stream_prefix_problem(value[len(STREAM):])
        return self.path_problem(value, base)

    def dataset_path(self, value: str) -> Path | None:
        """Where ``dataset=value`` (not a stream) is: a path inside the artifact root, or a bare Minari id
        that names no such path under ``<artifact root>/datasets/``; raises ValueError as ``confine``."""
        resolved = self.confine(value)
        if (resolved is not None and not resolved.exists() and not Path(value).is_absolute()
                and MINARI_ID_PATTERN.fullmatch(value)):
            return self.confine(value, self.root / DATASETS_DIR)
        return resolved

    # -- names ---------------------------------------------------------------------------------------------

    @staticmethod
    def name_problem(value: Any) -> str | None:
        """None if ``value`` is a plain name (a gymnasium id such as ALE/Pong-v5, a policy name)."""
        if value is None or value == "":
            return None
        if (isinstance(value, str) and NAME_PATTERN.fullmatch(value) and ".." not in value.split("/")
                and "//" not in value):
            return None
        return ("expected a name of letters, digits and . _ - / (a gymnasium id such as CartPole-v1, without "
                f"a 'module:' part), got {_short(value)}")

    # -- any value -----------------------------------------------------------------------------------------

    def value_problem(self, key: str, value: Any, base: Path | None = None) -> str | None:
        """What is wrong with ``value`` under ``key`` (the last segment of its dotted key); None: nothing."""
        if key == TARGET_KEY:
            return self.target_problem(value)
        if key == ACTIVATION_KEY:
            return self.activation_problem(value)
        if key == DATASET_KEY:
            return self.dataset_problem(value, base)
        if is_path_key(key):
            return self.path_problem(value, base)
        if key == NAME_KEY:
            return self.name_problem(value)
        if isinstance(value, list):
            for index, item in enumerate(value):
                if looks_like_class_path(item):
                    problem = self.target_problem(item)
                    if problem is not None:
                        return f"item {index} (a dotted string in a list is a class path): {problem}"
        return None


def stream_prefix_problem(prefix: str) -> str | None:
    """None if ``prefix`` is a broker prefix (the check ``broker.prefix`` passes), else what was expected."""
    from worker.wire import topology

    try:
        topology.experience_stream(prefix)
    except ValueError as err:
        return f"expected stream:<prefix> with a broker prefix ({err})"
    return None


@lru_cache(maxsize=256)
def _defined_in(path: str) -> str | None:
    """The module that defines the object ``path`` names (``__module__``), or None when it cannot be imported
    or names no class or function. Only called for paths under an allowed prefix, so what it imports is
    trusted code."""
    module_name, _, attribute = path.rpartition(".")
    try:
        obj = getattr(importlib.import_module(module_name), attribute)
    except Exception:  # noqa: BLE001 - any failure to import means "not a usable class path"
        return None
    if isinstance(obj, types.ModuleType) or not callable(obj):
        return None
    module = getattr(obj, "__module__", None)
    return module if isinstance(module, str) else None


_short = describe
