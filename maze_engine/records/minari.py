"""Minari datasets (minari 0.5, https://minari.farama.org): the engine's writer and reader.

Layout, Minari's own: the dataset ``(namespace/)name-v<version>`` lives in ``<root>/<id>/data``
(``metadata.json`` and ``main_data.hdf5``), where ``minari.load_dataset(id)`` looks with
``MINARI_DATASETS_PATH=<root>`` (default ``~/.minari/datasets``). An episode of N steps holds N + 1
observations (the last one is the observation after the final step), N actions, rewards, terminations and
truncations. Our convention, shared with ``maze-worker experience export``: the dataset's observation space is
the policy's observation space (a Dict: observations after the wrapper stack) and its action space the
policy's action space (a Dict), of an env with one actor. Datasets written by others with plain gymnasium
spaces are read as ``{"observation": ...}`` and ``{"action": ...}``, as GymMazeEnv shows them to a policy.
"""

import difflib
import os
import shutil
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
from gymnasium import spaces

from maze_engine.core.actor_id import ActorID
from maze_engine.core.errors import ConfigError
from maze_engine.records.episode import Trajectory

METADATA_FILE = "metadata.json"
DATA_DIR = "data"
STREAM_PREFIX = "stream:"
WRITE_BATCH = 64
"""Episodes handed to Minari's storage per call (each call opens the HDF5 file once)."""


class MinariDatasetError(ConfigError):
    """A Minari dataset cannot be found, written or used as asked; the message names the dataset."""


def _minari() -> Any:
    try:
        import minari
    except ImportError as err:
        raise MinariDatasetError("Minari datasets need the minari package: pip install 'maze-engine[minari]' "
                                 f"({err})") from err
    return minari


# --------------------------------------------------------------------------------------------- locating
def datasets_root() -> Path:
    """Where ``minari.load_dataset`` looks: ``MINARI_DATASETS_PATH``, else ``~/.minari/datasets``."""
    configured = os.environ.get("MINARI_DATASETS_PATH")
    return Path(configured) if configured else Path.home() / ".minari" / "datasets"


def check_dataset_id(dataset_id: Any, field: str) -> str:
    """``dataset_id`` if Minari accepts it as an id, else MinariDatasetError naming ``field``."""
    _minari()
    from minari.dataset.minari_dataset import parse_dataset_id

    try:
        parse_dataset_id(dataset_id)  # an id without -v<version> fails in int(None)
    except (ValueError, TypeError):
        raise MinariDatasetError(f"{field}: expected a Minari dataset id (namespace/)name-v<version> such as "
                                 f"cartpole/expert-v0, got {dataset_id!r}") from None
    return str(dataset_id)


def local_dataset_ids(root: Path) -> list[str]:
    """The ids of the datasets under ``root``."""
    if not root.is_dir():
        return []
    return sorted(path.parent.parent.relative_to(root).as_posix()
                  for path in root.rglob(f"{DATA_DIR}/{METADATA_FILE}"))


def is_dataset_dir(path: Path) -> bool:
    """Whether ``path`` is a Minari dataset directory (``<root>/<id>``) or its ``data`` directory."""
    return (path / METADATA_FILE).is_file() or (path / DATA_DIR / METADATA_FILE).is_file()


def find_dataset(source: str | os.PathLike[str], field: str = "dataset") -> Path:
    """The ``data`` directory of ``source``: a dataset directory, or a Minari id under ``datasets_root()``."""
    text = os.fspath(source)
    if text.startswith(STREAM_PREFIX):
        prefix = text[len(STREAM_PREFIX):] or "<prefix>"
        raise MinariDatasetError(
            f"{field}: {text!r} names the experience stream of maze-worker, which only the worker can read; "
            f"submit the job to the worker (maze-worker submit train algorithm=bc {field}={text} ...), which "
            f"exports the stream to a Minari dataset first, or export it yourself (maze-worker experience "
            f"export --prefix {prefix} --dataset-id <id> --out <dir>) and pass {field}=<dir>/<id>")
    path = Path(text).expanduser().absolute()
    for candidate in (path, path / DATA_DIR):
        if (candidate / METADATA_FILE).is_file():
            return candidate
    if path.exists():
        inside = local_dataset_ids(path)
        hint = f"; it holds the datasets {', '.join(inside[:12])}: pass {path}/<id>" if inside else ""
        raise MinariDatasetError(f"{field}: {path} is not a Minari dataset (no {METADATA_FILE} in it or in "
                                 f"its {DATA_DIR}/ directory){hint}")
    if not text or text.startswith((".", "/", "~")):
        raise MinariDatasetError(f"{field}: no Minari dataset at {path}; expected a dataset directory or a "
                                 "Minari id such as cartpole/expert-v0")
    check_dataset_id(text, field)
    root = datasets_root()
    if (root / text / DATA_DIR / METADATA_FILE).is_file():
        return root / text / DATA_DIR
    known = local_dataset_ids(root)
    close = difflib.get_close_matches(text, known, n=1, cutoff=0.6)
    hint = (f"did you mean {close[0]}?" if close else f"local datasets: {', '.join(known[:12])}" if known
            else "it holds none")
    raise MinariDatasetError(f"{field}: {text!r} is no path, and no Minari dataset of that id is in {root} "
                             f"(MINARI_DATASETS_PATH, default ~/.minari/datasets); {hint} (a remote one: "
                             f"minari download {text})")


def open_dataset(source: str | os.PathLike[str], field: str = "dataset") -> Any:
    """``source`` (see ``find_dataset``) as a ``minari.MinariDataset``."""
    path = find_dataset(source, field)
    minari = _minari()
    try:
        return minari.MinariDataset(path)
    except (ValueError, KeyError, OSError, AssertionError, TypeError) as err:
        raise MinariDatasetError(f"{field}: {path} is not a readable Minari dataset ({type(err).__name__}: "
                                 f"{err})") from err


def _described(dataset: Any) -> str:
    return f"{dataset.id} ({dataset.storage.data_path})"


# ---------------------------------------------------------------------------------------------- writing
class MinariWriter:
    """Writes episodes into a new Minari dataset whose ``data`` directory is ``path``; ``close`` completes it.

    >>> import tempfile, numpy as np
    >>> from gymnasium import spaces
    >>> root = Path(tempfile.mkdtemp())
    >>> observation_space = spaces.Dict({"observation": spaces.Box(-1, 1, (2,))})
    >>> writer = MinariWriter(root / "demo-v0" / "data", observation_space,
    ...                       spaces.Dict({"action": spaces.Discrete(2)}), dataset_id="demo-v0")
    >>> writer.add_episode({"observation": np.zeros((3, 2), np.float32)}, {"action": np.array([0, 1])},
    ...                    rewards=np.ones(2), terminations=np.array([False, True]),
    ...                    truncations=np.zeros(2, bool))
    >>> writer.close() == root / "demo-v0" / "data", writer.episodes, writer.steps
    (True, 1, 2)
    """

    def __init__(self, path: str | os.PathLike[str], observation_space: spaces.Space,
                 action_space: spaces.Space, dataset_id: str, env_spec: Any = None,
                 metadata: Mapping[str, Any] | None = None, field: str = "dataset_id") -> None:
        self.dataset_id = check_dataset_id(dataset_id, field)
        self.path = Path(path).absolute()  # minari 0.5.4 resolves its files wrongly from relative paths
        if (self.path / METADATA_FILE).exists():
            raise MinariDatasetError(f"{field}: a Minari dataset already exists at {self.path}; choose "
                                     "another id or version")
        from minari.dataset.minari_storage import MinariStorage

        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._storage = MinariStorage.new(self.path, observation_space=observation_space,
                                          action_space=action_space, env_spec=env_spec, data_format="hdf5",
                                          jpeg_encoding=False)
        self._metadata = dict(metadata or {})
        self._pending: list[Any] = []
        self.episodes = 0
        self.steps = 0
        self.closed = False

    def add_episode(self, observations: Any, actions: Any, rewards: np.ndarray, terminations: np.ndarray,
                    truncations: np.ndarray, infos: Mapping[str, Any] | None = None) -> None:
        """One episode of N steps: N + 1 observations, N actions, rewards, terminations and truncations."""
        from minari.data_collector import EpisodeBuffer

        count = len(rewards)
        if count < 1 or _length(observations) != count + 1 or _length(actions) != count:
            raise MinariDatasetError(f"{self.dataset_id}: an episode needs N >= 1 steps with N + 1 "
                                     f"observations and N actions; got {_length(observations)} observations, "
                                     f"{_length(actions)} actions and {count} rewards")
        self._pending.append(EpisodeBuffer(observations=observations, actions=actions,
                                           rewards=np.asarray(rewards, np.float64),
                                           terminations=np.asarray(terminations, bool),
                                           truncations=np.asarray(truncations, bool), infos=infos))
        self.episodes += 1
        self.steps += count
        if len(self._pending) >= WRITE_BATCH:
            self.flush()

    def add_dataset(self, path: Path) -> None:
        """Append the episodes of the dataset whose ``data`` directory is ``path``, in order."""
        from minari.dataset.minari_storage import MinariStorage

        storage = MinariStorage.read(path)
        for start in range(0, storage.total_episodes, WRITE_BATCH):
            indices = range(start, min(start + WRITE_BATCH, storage.total_episodes))
            for episode in storage.get_episodes(indices):
                self.add_episode(episode["observations"], episode["actions"], episode["rewards"],
                                 episode["terminations"], episode["truncations"],
                                 episode.get("infos") or None)

    def flush(self) -> None:
        """Write the episodes added since the last flush."""
        if self._pending:
            self._storage.update_episodes(self._pending)
            self._pending = []

    def close(self) -> Path:
        """Write what is pending and the dataset's metadata; returns the ``data`` directory."""
        if not self.closed:
            self.closed = True
            self.flush()
            self._storage.update_metadata({"dataset_id": self.dataset_id,
                                           "minari_version": _minari().__version__, **self._metadata})
        return self.path


def _length(value: Any) -> int:
    """Steps in a (nested) stack of values: the first axis of its first array."""
    while isinstance(value, Mapping | tuple | list) and not isinstance(value, np.ndarray):
        if not value:
            return 0
        value = next(iter(value.values())) if isinstance(value, Mapping) else value[0]
    return len(value)


def merge_datasets(parts: Sequence[Path], path: Path, dataset_id: str,
                   metadata: Mapping[str, Any] | None = None) -> Path:
    """One dataset at ``path`` (a ``data`` directory) from the datasets in ``parts``, episodes in order;
    the parts, all written with ``dataset_id`` and ``metadata``, are gone afterwards."""
    if len(parts) == 1:  # one part is the whole dataset already: move it into place
        path.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(parts[0], path)
        return path
    _minari()
    from gymnasium.envs.registration import EnvSpec
    from minari.dataset.minari_storage import MinariStorage

    first = MinariStorage.read(parts[0])
    raw_spec = MinariStorage.read_raw_metadata(parts[0]).get("env_spec")
    writer = MinariWriter(path, first.observation_space, first.action_space, dataset_id,
                          env_spec=EnvSpec.from_json(raw_spec) if raw_spec else None, metadata=metadata)
    for part in parts:
        writer.add_dataset(part)
    writer.close()
    for part in parts:
        shutil.rmtree(part, ignore_errors=True)
    return path


# ---------------------------------------------------------------------------------------------- reading
Adapter = Callable[[Any], Any]


def _adapter(stored: spaces.Space, expected: spaces.Space, key: str, name: str, field: str) -> Adapter:
    """Values of the dataset's ``stored`` space as values of the policy's ``expected`` space (``key``:
    ``observation`` or ``action``, the key GymMazeEnv gives a plain space)."""
    from maze_engine.core.space_codec import describe_space

    if stored == expected:
        return lambda value: value
    if isinstance(expected, spaces.Dict) and list(expected.spaces) == [key] and expected[key] == stored:
        return lambda value: {key: value}
    raise MinariDatasetError(
        f"{field}: the {key} space of Minari dataset {name} does not match the env's: dataset "
        f"{describe_space(stored)}, env {describe_space(expected)}; train with the env and wrappers the "
        f"dataset was recorded with (env=..., wrappers=...)")


def _plain(space: spaces.Space, key: str) -> Adapter:
    """Values of a foreign dataset's plain space under ``key``, as GymMazeEnv shows them to a policy."""
    return (lambda value: value) if isinstance(space, spaces.Dict) else (lambda value: {key: value})


def head(value: Any, count: int) -> Any:
    """The first ``count`` entries of every array in a (nested) value; tuples and lists of arrays (the columns
    of a ``Tuple`` space) come back as tuples."""
    if isinstance(value, Mapping):
        return {key: head(item, count) for key, item in value.items()}
    if isinstance(value, tuple | list):
        return tuple(head(item, count) for item in value)
    return value[:count]


def _concatenate(parts: list[Any]) -> Any:
    first = parts[0]
    if isinstance(first, Mapping):
        return {key: _concatenate([part[key] for part in parts]) for key in first}
    if isinstance(first, tuple):
        return tuple(_concatenate([part[index] for part in parts]) for index in range(len(first)))
    return np.concatenate(parts)


class StepData(NamedTuple):
    """Every step of a dataset, episodes one after another: what the policy saw and the action taken."""

    observations: dict[str, Any]
    """Per observation key ``(steps, ...)``."""
    actions: dict[str, Any]
    """Per action key ``(steps, ...)``."""
    episode_lengths: np.ndarray
    """Steps of each episode, in dataset order (they sum to the number of steps)."""
    name: str
    """The dataset's id and path, for messages."""


def load_steps(source: str | os.PathLike[str], observation_space: spaces.Dict, action_space: spaces.Dict,
               field: str = "dataset") -> StepData:
    """Every step of ``source`` (an id or a path), checked against the policy's spaces."""
    dataset = open_dataset(source, field)
    name = _described(dataset)
    as_observation = _adapter(dataset.observation_space, observation_space, "observation", name, field)
    as_action = _adapter(dataset.action_space, action_space, "action", name, field)
    observations, actions, lengths = [], [], []
    for episode in dataset.iterate_episodes():
        observations.append(as_observation(head(episode.observations, len(episode))))
        actions.append(as_action(episode.actions))
        lengths.append(len(episode))
    if not sum(lengths):
        raise MinariDatasetError(f"{field}: Minari dataset {name} holds no steps")
    return StepData(_concatenate(observations), _concatenate(actions), np.asarray(lengths), name)


def read_minari_trajectories(source: str | os.PathLike[str]) -> Iterator[Trajectory]:
    """The episodes of a Minari dataset as ``Trajectory`` records, in dataset order (the N observations the
    actions were taken on; the final observation stays in the dataset)."""
    dataset = open_dataset(source, "directory")
    as_observation = _plain(dataset.observation_space, "observation")
    as_action = _plain(dataset.action_space, "action")
    for episode in dataset.iterate_episodes():
        count = len(episode)
        terminated = np.asarray(episode.terminations, bool)
        truncated = np.asarray(episode.truncations, bool)
        yield Trajectory(episode_id=str(episode.id), observations=as_observation(head(episode.observations,
                                                                                        count)),
                         actions=as_action(episode.actions), rewards=np.asarray(episode.rewards),
                         dones=terminated | truncated, terminated=terminated, truncated=truncated,
                         actor_ids=[ActorID(0, 0)] * count, maze_states=[None] * count,
                         maze_actions=[None] * count,
                         complete=bool(count and (terminated[-1] or truncated[-1])),
                         metadata={"format": "minari", "dataset_id": dataset.id, "episode_index": episode.id,
                                   "length": count, "data_path": str(dataset.storage.data_path)})


def is_minari_source(source: str | os.PathLike[str]) -> bool:
    """Whether ``source`` is a Minari dataset directory, or no path but the id of a local Minari dataset."""
    path = Path(source)
    if path.exists():
        return is_dataset_dir(path)
    try:
        find_dataset(source, "directory")
    except MinariDatasetError:
        return False
    return True
