"""The trajectory file format: one ``.npz`` file per episode, readable without pickle.

``TrajectoryBuffer`` collects an episode step by step (cheap appends) and writes it once at the end;
``read_trajectories(directory)`` yields the episodes back as ``Trajectory`` records, for imitation learning
or inspection. The layout of a file is documented in docs/trajectories.md.
"""

import io
import json
import os
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from maze_engine.core.actor_id import ActorID
from maze_engine.core.errors import MazeError
from maze_engine.core.spaces import to_plain
from maze_engine.records.episode import Trajectory, TrajectoryStep

FORMAT = "maze_engine.trajectory"
VERSION = 1
METADATA_KEY = "metadata"
# Streams stored per step, in file order; each holds one value per step.
STREAMS = ("observation", "action", "reward", "done", "terminated", "truncated",
           "actor_step_key", "actor_agent_id", "maze_state", "maze_action")
# dtype kinds that numpy stores and loads without pickle: bool, integers, floats, complex, text, bytes.
_PLAIN_KINDS = frozenset("biufcUS")

__all__ = ["Trajectory", "TrajectoryBuffer", "TrajectoryFormatError", "TrajectoryStep", "read_trajectories",
           "read_trajectory", "trajectory_files"]


class TrajectoryFormatError(MazeError):
    """A file in a trajectory directory is not a trajectory file this version can read."""


# --------------------------------------------------------------------------------------------- encoding
def _escape(key: Any) -> str:
    # Keys become parts of member names joined by "/"; escaping keeps distinct keys distinct.
    return str(key).replace("%", "%25").replace("/", "%2F")


def _copy(value: Any) -> Any:
    """A snapshot of ``value``: envs may reuse and mutate the arrays they hand out."""
    # A table lookup on the exact type first: this runs several times per recorded step.
    copier = _COPIERS.get(type(value))
    if copier is not None:
        return copier(value)
    if isinstance(value, np.ndarray):
        return value.copy()
    if isinstance(value, Mapping):
        return {key: _copy(item) for key, item in value.items()}
    if isinstance(value, tuple):
        return tuple(_copy(item) for item in value)
    return value


def _same(value: Any) -> Any:
    return value


_COPIERS: dict[type, Any] = {
    np.ndarray: np.ndarray.copy,
    dict: lambda value: {key: _copy(item) for key, item in value.items()},
    **dict.fromkeys((int, float, bool, str, bytes, type(None), np.int64, np.int32, np.float64, np.float32,
                     np.bool_), _same),
}


def _stack(values: list[Any]) -> np.ndarray | None:
    """``values`` stacked along a new first axis, or None when they differ in shape or kind or need pickle."""
    first_type = type(values[0])
    if all(type(value) is first_type for value in values):
        # One call for the common case; a ragged list raises, mixed contents end up as object dtype.
        try:
            stacked = np.asarray(values)
        except (TypeError, ValueError):
            return None
        return stacked if stacked.dtype.kind in _PLAIN_KINDS else None
    try:
        arrays = [np.asarray(value) for value in values]
    except (TypeError, ValueError):
        return None
    kinds = {array.dtype.kind for array in arrays}
    if len(kinds) != 1 or not kinds <= _PLAIN_KINDS or len({array.shape for array in arrays}) != 1:
        return None
    return np.stack(arrays)


def _encode(name: str, values: list[Any], arrays: dict[str, np.ndarray]) -> dict[str, Any]:
    """Store ``values`` (one per step) under member names starting with ``name``; return their layout."""
    first = values[0]
    if isinstance(first, Mapping):
        keys = list(first)
        if all(isinstance(value, Mapping) and len(value) == len(keys) and all(k in value for k in keys)
               for value in values):
            items = [[key, _encode(f"{name}/{_escape(key)}", [v[key] for v in values], arrays)]
                     for key in keys]
            return {"kind": "dict", "items": items}
    elif isinstance(first, tuple):
        if all(isinstance(value, tuple) and len(value) == len(first) for value in values):
            return {"kind": "tuple", "items": [_encode(f"{name}/{index}", [v[index] for v in values], arrays)
                                               for index in range(len(first))]}
    elif first is not None:
        stacked = _stack(values)
        if stacked is not None:
            arrays[name] = stacked
            return {"kind": "array", "key": name}
    # Anything else (None, custom objects, ragged or changing structures): one JSON text per step.
    arrays[name] = np.array([json.dumps(to_plain(value), default=str) for value in values], dtype=np.str_)
    return {"kind": "json", "key": name}


def _decode(layout: Mapping[str, Any], members: Mapping[str, np.ndarray]) -> Any:
    kind = layout["kind"]
    if kind == "dict":
        return {key: _decode(item, members) for key, item in layout["items"]}
    if kind == "tuple":
        return tuple(_decode(item, members) for item in layout["items"])
    if kind == "array":
        return members[layout["key"]]
    if kind == "json":
        return [json.loads(text) for text in members[layout["key"]].tolist()]
    raise TrajectoryFormatError(f"layout kind: expected dict, tuple, array or json, got {kind!r}")


# ---------------------------------------------------------------------------------------------- write
class TrajectoryBuffer:
    """Collects the steps of one episode; ``write`` stacks them into a trajectory file.

    Appending copies arrays (cheap for observation-sized data) so later in-place changes by the env never
    alter what was recorded.
    """

    def __init__(self) -> None:
        # One tuple per step (a single append on the hot path); split into streams when written.
        self._steps: list[tuple[Any, ...]] = []

    def __len__(self) -> int:
        return len(self._steps)

    def append(self, *, observation: Mapping[str, Any], action: Mapping[str, Any], reward: Any,
               done: bool, terminated: bool, truncated: bool, actor_id: ActorID, maze_state: Any,
               maze_action: Any) -> None:
        """Record one step: ``observation`` is what ``action`` was computed from, ``maze_state`` the state
        before the action."""
        # Same order as STREAMS.
        self._steps.append((_copy(observation), _copy(action), _copy(reward), done, terminated, truncated,
                            actor_id[0], actor_id[1], _copy(maze_state), _copy(maze_action)))

    def clear(self) -> None:
        """Forget the recorded steps."""
        self._steps.clear()

    def _streams(self) -> dict[str, list[Any]]:
        streams = {name: list(values) for name, values in zip(STREAMS, zip(*self._steps, strict=True),
                                                               strict=True)}
        for name in ("done", "terminated", "truncated"):
            streams[name] = [bool(flag) for flag in streams[name]]
        return streams

    def write(self, directory: str | os.PathLike[str], episode_id: str, complete: bool,
              metadata: Mapping[str, Any] | None = None) -> Path:
        """Write the episode to ``<directory>/<episode_id>.npz`` (a ``-<n>`` suffix if taken) and clear.

        The file appears atomically (written under a temporary name, then renamed), so a reader running
        alongside never sees half an episode. An empty buffer is an error: there is nothing to read back.
        """
        if not len(self):
            raise MazeError("TrajectoryBuffer.write: the episode has no steps")
        arrays: dict[str, np.ndarray] = {}
        layouts = {name: _encode(name, values, arrays) for name, values in self._streams().items()}
        info = {"format": FORMAT, "version": VERSION, "episode_id": episode_id, "length": len(self),
                "complete": bool(complete), "written_at": time.time(), "layouts": layouts,
                "extra": dict(metadata or {})}
        arrays[METADATA_KEY] = np.array(json.dumps(info, default=str), dtype=np.str_)
        target_dir = Path(directory)
        target_dir.mkdir(parents=True, exist_ok=True)
        content = io.BytesIO()  # one write to disk instead of many small ones
        np.savez(content, **arrays)  # type: ignore[arg-type]
        temporary = target_dir / f".{episode_id}.{os.getpid()}.tmp"
        with temporary.open("wb") as file:
            file.write(content.getbuffer())
        target = target_dir / f"{episode_id}.npz"
        suffix = 0
        while target.exists():
            suffix += 1
            target = target_dir / f"{episode_id}-{suffix}.npz"
        os.replace(temporary, target)
        self.clear()
        return target


# ----------------------------------------------------------------------------------------------- read
def read_trajectory(path: str | os.PathLike[str]) -> Trajectory:
    """Load one trajectory file (never unpickles anything)."""
    try:
        with np.load(path, allow_pickle=False) as archive:
            members = {name: archive[name] for name in archive.files}
    except (OSError, ValueError) as err:
        raise TrajectoryFormatError(f"{os.fspath(path)}: not a readable trajectory file ({err})") from err
    try:
        info = json.loads(str(members.pop(METADATA_KEY)[()]))
        if info.get("format") != FORMAT or info.get("version") != VERSION:
            raise ValueError(f"format {info.get('format')!r} version {info.get('version')!r}")
        streams = {name: _decode(layout, members) for name, layout in info["layouts"].items()}
    except (KeyError, ValueError, TypeError) as err:
        raise TrajectoryFormatError(f"{os.fspath(path)}: expected a {FORMAT} file of version {VERSION} "
                                    f"({err})") from err
    step_keys, agent_ids = streams["actor_step_key"], streams["actor_agent_id"]
    actor_ids = [ActorID(key.item() if isinstance(key, np.generic) else key, int(agent))
                 for key, agent in zip(step_keys, agent_ids, strict=True)]
    return Trajectory(episode_id=info["episode_id"], observations=streams["observation"],
                      actions=streams["action"], rewards=streams["reward"], dones=streams["done"],
                      terminated=streams["terminated"], truncated=streams["truncated"], actor_ids=actor_ids,
                      maze_states=streams["maze_state"], maze_actions=streams["maze_action"],
                      complete=bool(info["complete"]), metadata=info)


def trajectory_files(directory: str | os.PathLike[str]) -> list[Path]:
    """The trajectory files under ``directory`` (subfolders included), oldest first."""
    files = [path for path in Path(directory).rglob("*.npz") if not path.name.startswith(".")]
    return sorted(files, key=lambda path: (path.stat().st_mtime_ns, path.name))


def read_trajectories(directory: str | os.PathLike[str]) -> Iterator[Trajectory]:
    """Every trajectory written under ``directory``, oldest file first, loaded one at a time.

    ``directory`` may also be a Minari dataset (its directory, or the id of a local one): its episodes are
    read in dataset order (``records.minari``).

    >>> import tempfile
    >>> from maze_engine import GymMazeEnv, TrajectoryRecordingWrapper
    >>> directory = tempfile.mkdtemp()
    >>> env = TrajectoryRecordingWrapper.wrap(GymMazeEnv("CartPole-v1"), output_dir=directory)
    >>> _ = env.reset()
    >>> _ = env.step({"action": 0})
    >>> env.close()
    >>> [(len(t), t.observations["observation"].shape) for t in read_trajectories(directory)]
    [(1, (1, 4))]
    """
    from maze_engine.records.minari import is_minari_source, read_minari_trajectories

    if is_minari_source(directory):
        yield from read_minari_trajectories(directory)
        return
    if not Path(directory).is_dir():
        raise TrajectoryFormatError(f"directory: {os.fspath(directory)!r} does not exist")
    for path in trajectory_files(directory):
        yield read_trajectory(path)
