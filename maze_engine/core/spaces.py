"""Checking and converting values against gymnasium spaces.

``to_space_sample`` turns what an external system sends (nested lists, maps and numbers, or ndarrays) into a
valid sample of a space, naming the offending field when it does not fit. ``to_plain`` goes the other way,
producing plain Python values (for msgpack, JSON or logs).
"""

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from gymnasium import spaces

from maze_engine.core.errors import SpaceMismatchError

_NUMERIC_KINDS = "biuf"


def _describe(value: Any) -> str:
    if isinstance(value, np.ndarray):
        return f"array of shape {value.shape} and dtype {value.dtype}"
    text = repr(value)
    return f"{type(value).__name__} {text[:60]}{'...' if len(text) > 60 else ''}"


def _to_array(space: spaces.Space, value: Any, field: str) -> np.ndarray:
    assert space.shape is not None and space.dtype is not None
    try:
        array = np.asarray(value)
    except (ValueError, TypeError) as err:  # ragged nested lists
        raise SpaceMismatchError(field, f"an array of shape {space.shape}",
                                 f"{_describe(value)} ({err})") from err
    if array.dtype.kind not in _NUMERIC_KINDS:
        raise SpaceMismatchError(field, f"numbers of dtype {space.dtype}", _describe(value))
    if array.shape != space.shape:
        raise SpaceMismatchError(field, f"shape {space.shape}", f"shape {array.shape}")
    target = np.dtype(space.dtype)
    if target.kind in "iub" and array.dtype.kind == "f" and (
            not np.all(np.isfinite(array)) or not np.all(np.equal(np.mod(array, 1), 0))):
        raise SpaceMismatchError(field, f"integers (dtype {target})", _describe(value))
    if target.kind in "iu" and array.size and array.dtype != target:
        # A cast would wrap out-of-range integers silently (300 -> 44 for uint8).
        limits = np.iinfo(target)
        if array.min() < limits.min or array.max() > limits.max:
            raise SpaceMismatchError(field, f"integers in [{limits.min}, {limits.max}] (dtype {target})",
                                     _describe(value))
    with np.errstate(over="ignore"):
        result = array.astype(target, copy=False)
    # Checked after the cast: a finite float64 may still overflow a float32 to inf.
    if target.kind == "f" and not np.all(np.isfinite(result)):
        raise SpaceMismatchError(field, f"finite numbers (dtype {target})", _describe(value))
    return result


def to_space_sample(space: spaces.Space, value: Any, field: str = "value") -> Any:
    """Convert ``value`` into a sample of ``space``; raise SpaceMismatchError naming ``field`` if it cannot
    fit."""
    if isinstance(space, spaces.Box):
        return _to_array(space, value, field)
    if isinstance(space, spaces.Discrete):
        if isinstance(value, np.ndarray) and value.shape == ():
            value = value.item()
        if isinstance(value, bool) or not isinstance(value, int | np.integer):
            raise SpaceMismatchError(field, f"an integer in [{space.start}, {space.start + space.n})",
                                     _describe(value))
        if not space.start <= int(value) < space.start + space.n:
            raise SpaceMismatchError(field, f"an integer in [{space.start}, {space.start + space.n})",
                                     str(value))
        return np.int64(value)
    if isinstance(space, spaces.MultiDiscrete):
        array = _to_array(space, value, field)
        if np.any(array < space.start) or np.any(array >= space.start + space.nvec):
            raise SpaceMismatchError(field, f"values below {(space.start + space.nvec).tolist()}",
                                     _describe(value))
        return array
    if isinstance(space, spaces.MultiBinary):
        array = _to_array(space, value, field)
        if np.any((array != 0) & (array != 1)):
            raise SpaceMismatchError(field, "only 0 and 1", _describe(value))
        return array
    if isinstance(space, spaces.Dict):
        if not isinstance(value, Mapping):
            raise SpaceMismatchError(field, f"a map with keys {sorted(space.spaces)}", _describe(value))
        missing = [key for key in space.spaces if key not in value]
        if missing:
            raise SpaceMismatchError(f"{field}.{missing[0]}", "a value (key is missing)", "nothing")
        extra = [key for key in value if key not in space.spaces]
        if extra:
            raise SpaceMismatchError(field, f"only the keys {sorted(space.spaces)}",
                                     f"unexpected key {extra[0]!r}")
        return {key: to_space_sample(sub, value[key], f"{field}.{key}") for key, sub in space.spaces.items()}
    if isinstance(space, spaces.Tuple):
        if (not isinstance(value, Sequence) or isinstance(value, str | bytes)
                or len(value) != len(space.spaces)):
            raise SpaceMismatchError(field, f"a list of {len(space.spaces)} items", _describe(value))
        pairs = enumerate(zip(space.spaces, value, strict=True))
        return tuple(to_space_sample(sub, item, f"{field}[{i}]") for i, (sub, item) in pairs)
    raise SpaceMismatchError(field,
                             "a supported space (Box, Discrete, MultiDiscrete, MultiBinary, Dict, Tuple)",
                             type(space).__name__)


def to_plain(value: Any) -> Any:
    """Turn a space sample (numpy scalars and arrays, dicts, tuples) into plain Python values."""
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Mapping):
        return {key: to_plain(item) for key, item in value.items()}
    if isinstance(value, tuple | list):
        return [to_plain(item) for item in value]
    return value


def flat_dim(space: spaces.Space) -> int:
    """Number of scalars a sample of ``space`` flattens to (one-hot for Discrete)."""
    return int(spaces.flatdim(space))
