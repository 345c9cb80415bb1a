"""Gymnasium spaces to JSON and back, so a run directory records the spaces its policy was trained on.

Only plain JSON types are written (infinite bounds become the strings ``"inf"`` and ``"-inf"``), and Dict
spaces keep their key order. Step keys of a spaces dict may be ints or strings; both survive the round trip.
"""

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from gymnasium import spaces

from maze_engine.core.errors import ConfigError

SPACES_FORMAT_VERSION = 1


def _encode_number(value: float) -> float | str:
    if np.isposinf(value):
        return "inf"
    if np.isneginf(value):
        return "-inf"
    return float(value)


def _encode_bounds(array: np.ndarray) -> Any:
    """A scalar when all entries agree (the common case), otherwise a nested list."""
    flat = array.reshape(-1)
    if flat.size > 0 and np.all(flat == flat[0]):
        return _encode_number(flat[0])
    return np.vectorize(_encode_number, otypes=[object])(array).tolist()


def _decode_bounds(value: Any, shape: tuple[int, ...], dtype: np.dtype, field: str) -> np.ndarray:
    def number(item: Any) -> float:
        if isinstance(item, str):
            if item not in ("inf", "-inf"):
                raise ConfigError(f"{field}: expected a number, 'inf' or '-inf', got {item!r}")
            return float(item)
        if isinstance(item, list):
            raise ConfigError(f"{field}: nested list does not match shape {shape}")
        return float(item)

    if isinstance(value, list):
        array = np.array(_map_nested(value, number), dtype=np.float64)
        if array.shape != shape:
            raise ConfigError(f"{field}: expected bounds of shape {shape}, got shape {array.shape}")
    else:
        array = np.full(shape, number(value), dtype=np.float64)
    return array.astype(dtype)


def _map_nested(value: Any, function: Any) -> Any:
    if isinstance(value, list):
        return [_map_nested(item, function) for item in value]
    return function(value)


def space_to_json(space: spaces.Space) -> dict[str, Any]:
    """A JSON-ready description of ``space`` (Box, Discrete, MultiDiscrete, MultiBinary, Dict, Tuple)."""
    if isinstance(space, spaces.Box):
        return {"type": "Box", "shape": list(space.shape), "dtype": str(space.dtype),
                "low": _encode_bounds(space.low), "high": _encode_bounds(space.high)}
    if isinstance(space, spaces.Discrete):
        return {"type": "Discrete", "n": int(space.n), "start": int(space.start)}
    if isinstance(space, spaces.MultiDiscrete):
        return {"type": "MultiDiscrete", "nvec": space.nvec.tolist(), "start": space.start.tolist(),
                "dtype": str(space.dtype)}
    if isinstance(space, spaces.MultiBinary):
        n = space.n if isinstance(space.n, int | np.integer) else [int(size) for size in space.n]
        return {"type": "MultiBinary", "n": int(n) if isinstance(n, int | np.integer) else n}
    if isinstance(space, spaces.Dict):
        return {"type": "Dict", "spaces": [[key, space_to_json(sub)] for key, sub in space.spaces.items()]}
    if isinstance(space, spaces.Tuple):
        return {"type": "Tuple", "spaces": [space_to_json(sub) for sub in space.spaces]}
    raise ConfigError(f"space: expected Box, Discrete, MultiDiscrete, MultiBinary, Dict or Tuple, "
                      f"got {type(space).__name__}")


def space_from_json(data: Any, field: str = "space") -> spaces.Space:
    """Rebuild a space written by ``space_to_json``; ``field`` names the location in error messages."""
    if not isinstance(data, Mapping) or "type" not in data:
        raise ConfigError(f"{field}: expected a mapping with a 'type' key, got {type(data).__name__}")
    kind = data["type"]
    try:
        if kind == "Box":
            shape = tuple(int(n) for n in data["shape"])
            dtype = np.dtype(data["dtype"])
            low = _decode_bounds(data["low"], shape, dtype, f"{field}.low")
            high = _decode_bounds(data["high"], shape, dtype, f"{field}.high")
            return spaces.Box(low=low, high=high, shape=shape, dtype=dtype)
        if kind == "Discrete":
            return spaces.Discrete(int(data["n"]), start=int(data.get("start", 0)))
        if kind == "MultiDiscrete":
            return spaces.MultiDiscrete(np.array(data["nvec"]), dtype=np.dtype(data.get("dtype", "int64")),
                                        start=np.array(data["start"]) if "start" in data else None)
        if kind == "MultiBinary":
            n = data["n"]
            return spaces.MultiBinary(int(n) if isinstance(n, int) else [int(size) for size in n])
        if kind == "Dict":
            return spaces.Dict({str(key): space_from_json(sub, f"{field}.{key}")
                                for key, sub in data["spaces"]})
        if kind == "Tuple":
            return spaces.Tuple([space_from_json(sub, f"{field}[{i}]")
                                 for i, sub in enumerate(data["spaces"])])
    except ConfigError:
        raise
    except KeyError as err:
        raise ConfigError(f"{field}: {kind} space is missing the key {err}") from err
    except (TypeError, ValueError) as err:
        raise ConfigError(f"{field}: invalid {kind} space ({err})") from err
    raise ConfigError(f"{field}.type: expected Box, Discrete, MultiDiscrete, MultiBinary, Dict or Tuple, "
                      f"got {kind!r}")


def spaces_dict_to_json(spaces_dict: Mapping[Any, spaces.Space]) -> list[dict[str, Any]]:
    """Encode ``{step_key: space}`` as a list, so int step keys stay ints (JSON object keys are strings)."""
    return [{"step_key": key, "space": space_to_json(space)} for key, space in spaces_dict.items()]


def spaces_dict_from_json(data: Any, field: str) -> dict[int | str, spaces.Space]:
    """Decode a list written by ``spaces_dict_to_json``."""
    if not isinstance(data, list):
        raise ConfigError(f"{field}: expected a list of {{step_key, space}} entries, "
                          f"got {type(data).__name__}")
    result: dict[int | str, spaces.Space] = {}
    for index, entry in enumerate(data):
        if not isinstance(entry, Mapping) or "step_key" not in entry or "space" not in entry:
            raise ConfigError(f"{field}[{index}]: expected a mapping with 'step_key' and 'space'")
        key = entry["step_key"]
        if not isinstance(key, int | str) or isinstance(key, bool):
            raise ConfigError(f"{field}[{index}].step_key: expected an int or a string, got {key!r}")
        result[key] = space_from_json(entry["space"], f"{field}[{key}]")
    return result


def write_spaces_json(path: str | Path, observation_spaces_dict: Mapping[Any, spaces.Space],
                      action_spaces_dict: Mapping[Any, spaces.Space],
                      agent_counts_dict: Mapping[Any, int] | None = None) -> None:
    """Write the spaces of a policy (and its agent counts per step) to ``path``."""
    document: dict[str, Any] = {
        "format_version": SPACES_FORMAT_VERSION,
        "observation_spaces_dict": spaces_dict_to_json(observation_spaces_dict),
        "action_spaces_dict": spaces_dict_to_json(action_spaces_dict),
    }
    if agent_counts_dict is not None:
        document["agent_counts_dict"] = [{"step_key": key, "count": int(count)}
                                         for key, count in agent_counts_dict.items()]
    Path(path).write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")


def read_spaces_json(path: str | Path) -> tuple[dict[int | str, spaces.Space], dict[int | str, spaces.Space],
                                                dict[int | str, int] | None]:
    """Read ``(observation_spaces_dict, action_spaces_dict, agent_counts_dict or None)`` from ``path``."""
    path = Path(path)
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as err:
        raise ConfigError(f"{path}: file not found; expected the spaces.json written with the policy") \
            from err
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ConfigError(f"{path}: expected a JSON document of spaces, got unreadable content ({err})") \
            from err
    if not isinstance(document, Mapping):
        raise ConfigError(f"{path}: expected a JSON object, got {type(document).__name__}")
    for key in ("observation_spaces_dict", "action_spaces_dict"):
        if key not in document:
            raise ConfigError(f"{path}: missing the key {key!r}")
    observation_spaces = spaces_dict_from_json(document["observation_spaces_dict"],
                                               f"{path.name}:observation_spaces_dict")
    action_spaces = spaces_dict_from_json(document["action_spaces_dict"], f"{path.name}:action_spaces_dict")
    counts = document.get("agent_counts_dict")
    agent_counts = None if counts is None else {entry["step_key"]: int(entry["count"]) for entry in counts}
    return observation_spaces, action_spaces, agent_counts


def describe_space(space: spaces.Space) -> str:
    """A short human-readable description for error messages."""
    return json.dumps(space_to_json(space), separators=(",", ":"))
