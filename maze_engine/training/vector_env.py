"""Vectorised envs for training: N structured envs stepped as one batch.

``InProcessVectorEnv`` steps its envs one after another in this process (runner ``dev``);
``SubprocessVectorEnv`` spreads them over worker processes and steps the workers in parallel (runner
``local``). Both reset an env as soon as its episode ends and hand back observations stacked per key
(``{"observation": array[N, ...]}``), so the policy runs once per step for all envs.

Each env is wrapped in a LogStatsWrapper (prefix ``train``) unless it already has one; the statistics of all
envs are merged per epoch with ``epoch_aggregates``. The on-policy trainers support envs with one step key
and one agent (the common gym-style case); others are rejected with a ConfigError.
"""

import importlib.machinery
import multiprocessing as mp
import os
import sys
import traceback
import types
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from multiprocessing.connection import Connection
from typing import Any, NamedTuple

import numpy as np
from gymnasium import spaces

from maze_engine.core.actor_id import ActorID
from maze_engine.core.env.structured_env import StructuredEnv
from maze_engine.core.errors import ConfigError
from maze_engine.core.stats.running import RunningStats
from maze_engine.wrappers.logging.log_stats import EpisodeStats, LogStatsWrapper
from maze_engine.wrappers.wrapper import find_wrapper

EnvFactory = Callable[[], StructuredEnv]
Batch = dict[str, np.ndarray]


class VectorStep(NamedTuple):
    """What one step of all envs returns; arrays are indexed by env."""

    observations: Batch
    """Next observation per env, stacked per key; where an episode ended, the first one of the next."""
    rewards: np.ndarray
    """float32 [N]."""
    dones: np.ndarray
    """bool [N]: the episode ended with this step (terminated or truncated)."""
    truncated: np.ndarray
    """bool [N]: a time limit cut the episode (its value is bootstrapped from the final observation)."""
    final_observations: dict[int, dict[str, np.ndarray]]
    """Env index -> last observation of an episode that was truncated."""
    finished_episodes: list[EpisodeStats]
    """Return and length of every episode that ended with this step."""


def check_single_actor(env: StructuredEnv) -> tuple[spaces.Dict, spaces.Dict, ActorID]:
    """The observation and action space of an env with one step key and one agent; ConfigError otherwise."""
    step_keys = list(env.action_spaces_dict)
    if len(step_keys) != 1 or any(count != 1 for count in env.agent_counts_dict.values()):
        raise ConfigError(f"env: the on-policy trainers support envs with one step key and one agent, got "
                          f"step keys {step_keys} with agent counts {dict(env.agent_counts_dict)}")
    step_key = step_keys[0]
    observation_space = env.observation_spaces_dict[step_key]
    for key, space in observation_space.spaces.items():
        if not isinstance(space, spaces.Box | spaces.Discrete | spaces.MultiBinary | spaces.MultiDiscrete):
            raise ConfigError(f"env: observation {key!r} has a {type(space).__name__} space; the trainers "
                              f"expect array spaces (Box, Discrete, MultiBinary, MultiDiscrete) per key")
    return observation_space, env.action_spaces_dict[step_key], ActorID(step_key, 0)


class VectorEnv(ABC):
    """N envs stepped together; observations and actions are dicts of arrays with a leading env axis."""

    n_envs: int
    observation_space: spaces.Dict
    action_space: spaces.Dict
    actor_id: ActorID

    @abstractmethod
    def reset(self) -> Batch:
        """Reset every env and return the stacked first observations."""

    @abstractmethod
    def step(self, actions: Batch) -> VectorStep:
        """Apply ``actions[key][i]`` to env ``i``; envs whose episode ended are reset."""

    @abstractmethod
    def seed(self, base_seed: int | None) -> None:
        """Seed env ``i`` with ``base_seed + i`` (applied at the next reset)."""

    @abstractmethod
    def epoch_aggregates(self) -> dict[str, RunningStats]:
        """The episode statistics of all envs since the last call, merged; starts a new epoch."""

    @abstractmethod
    def close(self) -> None:
        """Release the envs (and worker processes)."""

    def __enter__(self) -> "VectorEnv":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class InProcessVectorEnv(VectorEnv):
    """Steps ``envs`` one after another in this process (runner ``dev``).

    >>> from maze_engine import GymMazeEnv
    >>> venv = InProcessVectorEnv([GymMazeEnv("CartPole-v1") for _ in range(2)])
    >>> venv.reset()["observation"].shape
    (2, 4)
    >>> venv.step({"action": np.array([0, 1])}).rewards
    array([1., 1.], dtype=float32)
    """

    def __init__(self, envs: Sequence[StructuredEnv], seed_offset: int = 0) -> None:
        if not envs:
            raise ConfigError("n_envs: expected at least one env, got 0")
        self.observation_space, self.action_space, self.actor_id = check_single_actor(envs[0])
        self.envs: list[StructuredEnv] = []
        self._stats: list[LogStatsWrapper] = []
        for env in envs:
            stats = find_wrapper(env, LogStatsWrapper)
            if stats is None:
                env = stats = LogStatsWrapper.wrap(env, logging_prefix="train")
            self.envs.append(env)
            self._stats.append(stats)
        self.n_envs = len(self.envs)
        self._seed_offset = seed_offset
        self._observation_keys = list(self.observation_space.spaces)
        self._action_keys = list(self.action_space.spaces)
        # Discrete actions reach the envs as Python ints: gymnasium checks those faster than numpy scalars.
        self._as_python = {key: isinstance(space, spaces.Discrete)
                           for key, space in self.action_space.spaces.items()}

    @classmethod
    def from_factory(cls, env_factory: EnvFactory, n_envs: int, seed_offset: int = 0) -> "InProcessVectorEnv":
        """``n_envs`` envs built by calling ``env_factory``."""
        if n_envs < 1:
            raise ConfigError(f"runner.n_envs: expected an integer >= 1, got {n_envs}")
        return cls([env_factory() for _ in range(n_envs)], seed_offset=seed_offset)

    def _empty_batch(self) -> Batch:
        return {key: np.empty((self.n_envs, *(space.shape or ())), dtype=space.dtype)
                for key, space in self.observation_space.spaces.items()}

    def reset(self) -> Batch:
        batch = self._empty_batch()
        for index, env in enumerate(self.envs):
            observation = env.reset()
            for key in self._observation_keys:
                batch[key][index] = observation[key]
        return batch

    def step(self, actions: Batch) -> VectorStep:
        batch = self._empty_batch()
        rewards = np.empty(self.n_envs, dtype=np.float32)
        dones = np.zeros(self.n_envs, dtype=bool)
        truncated = np.zeros(self.n_envs, dtype=bool)
        final_observations: dict[int, dict[str, np.ndarray]] = {}
        finished: list[EpisodeStats] = []
        columns = {key: actions[key].tolist() if self._as_python[key] else actions[key]
                   for key in self._action_keys}
        for index, env in enumerate(self.envs):
            action = {key: column[index] for key, column in columns.items()}
            observation, reward, done, info = env.step(action)
            rewards[index] = reward
            if done:
                dones[index] = True
                if info.get("truncated", False):
                    truncated[index] = True
                    final_observations[index] = observation
                episode = self._stats[index].last_episode_stats
                if episode is not None:
                    finished.append(episode)
                observation = env.reset()
            for key in self._observation_keys:
                batch[key][index] = observation[key]
        return VectorStep(batch, rewards, dones, truncated, final_observations, finished)

    def seed(self, base_seed: int | None) -> None:
        for index, env in enumerate(self.envs):
            env.seed(None if base_seed is None else base_seed + self._seed_offset + index)

    def epoch_aggregates(self) -> dict[str, RunningStats]:
        merged: dict[str, RunningStats] = {}
        for stats in self._stats:
            for name, aggregate in stats.epoch_aggregates().items():
                merged.setdefault(name, RunningStats()).merge(aggregate)
            stats.clear_epoch_stats()
        return merged

    def close(self) -> None:
        for env in self.envs:
            env.close()


def _worker_main(connection: Connection, factory_blob: bytes, n_envs: int, seed_offset: int) -> None:
    """Worker process loop: owns an InProcessVectorEnv and answers (command, argument) messages."""
    import cloudpickle

    venv: InProcessVectorEnv | None = None
    try:
        venv = InProcessVectorEnv.from_factory(cloudpickle.loads(factory_blob), n_envs, seed_offset)
        connection.send(("ok", (venv.observation_space, venv.action_space, venv.actor_id)))
        while True:
            command, argument = connection.recv()
            if command == "step":
                connection.send(("ok", venv.step(argument)))
            elif command == "reset":
                connection.send(("ok", venv.reset()))
            elif command == "seed":
                venv.seed(argument)
                connection.send(("ok", None))
            elif command == "aggregates":
                connection.send(("ok", venv.epoch_aggregates()))
            elif command == "close":
                venv.close()
                connection.send(("ok", None))
                return
    except (EOFError, KeyboardInterrupt):  # the trainer went away; nothing left to answer
        pass
    except BaseException:  # report every failure (env bugs included) to the trainer instead of dying silently
        connection.send(("error", traceback.format_exc()))
    finally:
        connection.close()


def _importable_elsewhere(module_name: str) -> bool:
    """Whether a fresh process could import ``module_name`` from ``sys.path`` (test modules loaded by file
    path and notebook cells cannot)."""
    top_level = module_name.partition(".")[0]
    if top_level in sys.builtin_module_names:
        return True
    return importlib.machinery.PathFinder.find_spec(top_level) is not None


def _referenced_modules(obj: Any, depth: int = 4) -> set[str]:
    """Modules of the functions and classes ``obj`` is made of: itself, its attributes, closure cells,
    ``functools.partial`` parts and container items, a few levels deep."""
    found: set[str] = set()
    seen: set[int] = set()

    def visit(item: Any, level: int) -> None:
        if level < 0 or id(item) in seen or isinstance(item, str | bytes | int | float | bool | type(None)):
            return
        seen.add(id(item))
        module = getattr(item, "__module__", None)
        if isinstance(module, str) and (callable(item) or isinstance(item, type)):
            found.add(module)
        children: list[Any] = []
        if isinstance(item, dict):
            children.extend(item.keys())
            children.extend(item.values())
        elif isinstance(item, list | tuple | set | frozenset):
            children.extend(item)
        else:
            children.extend(cell.cell_contents for cell in getattr(item, "__closure__", None) or ()
                            if cell.cell_contents is not None)
            for name in ("func", "args", "keywords"):  # functools.partial
                if hasattr(item, name) and not isinstance(item, type):
                    children.append(getattr(item, name))
            if not isinstance(item, type | types.ModuleType) and hasattr(item, "__dict__"):
                children.extend(vars(item).values())
        for child in children:
            visit(child, level - 1)

    visit(obj, depth)
    return found


def pickle_factory(env_factory: EnvFactory) -> bytes:
    """``env_factory`` as cloudpickle bytes; code from modules a worker could not import (test modules loaded
    by file path, notebook cells) travels by value."""
    import cloudpickle

    by_value = [sys.modules[name] for name in _referenced_modules(env_factory)
                if name in sys.modules and name != "__main__" and not _importable_elsewhere(name)]
    for module in by_value:
        cloudpickle.register_pickle_by_value(module)
    try:
        return cloudpickle.dumps(env_factory)
    except Exception as err:
        raise ConfigError(f"env: the env factory cannot be sent to worker processes ({err})") from err
    finally:
        for module in by_value:
            cloudpickle.unregister_pickle_by_value(module)


class SubprocessVectorEnv(VectorEnv):
    """``n_envs`` envs spread over ``n_processes`` worker processes (runner ``local``).

    ``env_factory`` is sent to the workers with cloudpickle, so lambdas and closures work. With the ``spawn``
    and ``forkserver`` start methods a script that builds this must keep its top-level code under
    ``if __name__ == "__main__":``, because the workers import the main module.
    """

    def __init__(self, env_factory: EnvFactory, n_envs: int, n_processes: int = 0,
                 start_method: str = "spawn") -> None:
        if n_envs < 1:
            raise ConfigError(f"runner.n_envs: expected an integer >= 1, got {n_envs}")
        if start_method not in mp.get_all_start_methods():
            raise ConfigError(f"runner.start_method: expected one of {mp.get_all_start_methods()}, "
                              f"got {start_method!r}")
        if n_processes < 0:
            raise ConfigError(f"runner.n_processes: expected an integer >= 0, got {n_processes}")
        n_processes = min(n_processes or os.cpu_count() or 1, n_envs)
        self.n_envs = n_envs
        context: Any = mp.get_context(start_method)
        blob = pickle_factory(env_factory)
        # Envs are split as evenly as possible; worker w owns the contiguous slice starting at offsets[w].
        sizes = [n_envs // n_processes + (1 if w < n_envs % n_processes else 0) for w in range(n_processes)]
        self._offsets = np.cumsum([0, *sizes])
        self._connections: list[Connection] = []
        self._processes: list[Any] = []
        for worker, size in enumerate(sizes):
            parent, child = context.Pipe()
            process = context.Process(target=_worker_main,
                                      args=(child, blob, size, int(self._offsets[worker])),
                                      daemon=True, name=f"maze-env-worker-{worker}")
            process.start()
            child.close()
            self._connections.append(parent)
            self._processes.append(process)
        self._closed = False
        try:
            answers = self._receive_all()
        except BaseException:
            self.close()
            raise
        self.observation_space, self.action_space, self.actor_id = answers[0]

    def _receive_all(self) -> list[Any]:
        answers = []
        for worker, connection in enumerate(self._connections):
            try:
                status, payload = connection.recv()
            except EOFError as err:
                raise RuntimeError(f"env worker {worker} exited unexpectedly") from err
            if status == "error":
                raise RuntimeError(f"env worker {worker} failed:\n{payload}")
            answers.append(payload)
        return answers

    def _broadcast(self, command: str, argument: Any = None) -> list[Any]:
        for connection in self._connections:
            connection.send((command, argument))
        return self._receive_all()

    def reset(self) -> Batch:
        parts = self._broadcast("reset")
        return {key: np.concatenate([part[key] for part in parts]) for key in parts[0]}

    def step(self, actions: Batch) -> VectorStep:
        for worker, connection in enumerate(self._connections):
            start, stop = self._offsets[worker], self._offsets[worker + 1]
            connection.send(("step", {key: value[start:stop] for key, value in actions.items()}))
        parts: list[VectorStep] = self._receive_all()
        final_observations: dict[int, dict[str, np.ndarray]] = {}
        finished: list[EpisodeStats] = []
        for worker, part in enumerate(parts):
            offset = int(self._offsets[worker])
            final_observations.update({offset + index: obs for index, obs in part.final_observations.items()})
            finished.extend(part.finished_episodes)
        return VectorStep(
            observations={key: np.concatenate([part.observations[key] for part in parts])
                          for key in parts[0].observations},
            rewards=np.concatenate([part.rewards for part in parts]),
            dones=np.concatenate([part.dones for part in parts]),
            truncated=np.concatenate([part.truncated for part in parts]),
            final_observations=final_observations,
            finished_episodes=finished)

    def seed(self, base_seed: int | None) -> None:
        self._broadcast("seed", base_seed)

    def epoch_aggregates(self) -> dict[str, RunningStats]:
        merged: dict[str, RunningStats] = {}
        for part in self._broadcast("aggregates"):
            for name, aggregate in part.items():
                merged.setdefault(name, RunningStats()).merge(aggregate)
        return merged

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for connection in self._connections:
            try:
                connection.send(("close", None))
                connection.recv()
            except (BrokenPipeError, EOFError, OSError):
                pass  # the worker is already gone
            connection.close()
        for process in self._processes:
            process.join(timeout=5)
            if process.is_alive():
                process.terminate()
                process.join(timeout=1)
