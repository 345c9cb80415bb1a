"""Builds a deployment's env, wrapper stack and policy from instances or configs, and clones stacks cheaply.

Wrappers come in the formats rollouts accept: a list of wrapper configs (``_target_`` mappings, classes,
class paths, factory functions of ``env``, ``{class path: kwargs}`` mappings or ready instances), or Maze's
wrapper config, a mapping ``{class path or class: kwargs}``; either way they are applied in order, the first
one wrapping the env.

``clone_stack`` gives the DeploymentFactory a fresh stack per deployment without building a gymnasium env:
specs that never change during an episode (spaces, conversions, gymnasium envs, policies) are shared, every
other object (wrapper state, statistics) is copied.
"""

import copy
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeAlias

import gymnasium as gym
from gymnasium import spaces

from maze_engine.core.env.conversion import ActionConversionInterface, ObservationConversionInterface
from maze_engine.core.env.maze_env import MazeEnv
from maze_engine.core.env.structured_env import StructuredEnv
from maze_engine.core.errors import ConfigError
from maze_engine.core.factory import TARGET_KEY, _plain_config, accepted_kwargs, instantiate, resolve_target
from maze_engine.deployment.external_core_env import ExternalCoreEnv
from maze_engine.policies.policy import StructuredPolicy
from maze_engine.wrappers.wrapper import Wrapper

ConfigLike: TypeAlias = Mapping[str, Any] | str | type | Any
"""An instance, a ``_target_`` mapping, a class or a dotted class path."""

WrappersLike: TypeAlias = Sequence[Any] | Mapping[Any, Any] | None
"""A list of wrapper configs/instances, or ``{class path or class: kwargs}``, or None for no wrappers."""

_ATOMIC = (int, float, str, bytes, bool, type(None))
_SHARED_TYPES = (spaces.Space, gym.Env, ObservationConversionInterface, ActionConversionInterface,
                 StructuredPolicy)


def _label(target: Any) -> str:
    return target if isinstance(target, str) else getattr(target, "__qualname__", type(target).__name__)


@dataclass(frozen=True)
class ConfiguredWrapper:
    """A wrapper built from config: ``factory(env=inner, **kwargs)``, resolved once and rebuilt per stack."""

    factory: Callable[..., Any]
    kwargs: Mapping[str, Any]
    label: str

    @classmethod
    def from_target(cls, target: Any, kwargs: Any, label: str) -> "ConfiguredWrapper":
        if kwargs is None:
            kwargs = {}
        if not isinstance(kwargs, Mapping):
            raise ConfigError(f"{label}: expected a mapping of constructor arguments, "
                              f"got {type(kwargs).__name__}")
        factory = resolve_target(target) if isinstance(target, str) else target
        if not callable(factory):
            raise ConfigError(f"{label}: expected a wrapper class or class path, got {type(target).__name__}")
        if "env" not in accepted_kwargs(factory, {"env": None}):
            raise ConfigError(f"{label}: {_label(factory)} takes no 'env' argument, so it cannot wrap an env")
        return cls(factory, dict(kwargs), label)

    def build(self, env: StructuredEnv) -> StructuredEnv:
        # Fresh argument values per stack, so no two stacks share a mutable constructor argument.
        kwargs = {key: value if isinstance(value, _ATOMIC) else copy.deepcopy(value)
                  for key, value in self.kwargs.items()}
        try:
            wrapper = self.factory(env=env, **kwargs)
        except TypeError as err:
            raise ConfigError(f"{self.label}: {_label(self.factory)} rejected its arguments "
                              f"{sorted(kwargs)}: {err}") from err
        if not isinstance(wrapper, StructuredEnv):
            raise ConfigError(f"{self.label}: {_label(self.factory)} built a {type(wrapper).__name__}, "
                              "expected a wrapper (a StructuredEnv)")
        return wrapper


@dataclass(frozen=True)
class WrapperInstance:
    """A ready wrapper: placed over the inner env (its ``env`` is re-pointed), cloned for further stacks."""

    wrapper: Wrapper[Any]
    label: str

    def build(self, env: StructuredEnv) -> StructuredEnv:
        self.wrapper.env = env
        return self.wrapper


WrapperLayer: TypeAlias = ConfiguredWrapper | WrapperInstance


def _layer(item: Any, label: str) -> list[WrapperLayer]:
    if isinstance(item, Wrapper):
        return [WrapperInstance(item, label)]
    if isinstance(item, str | type) or (callable(item) and not isinstance(item, Mapping)):
        return [ConfiguredWrapper.from_target(item, {}, label)]
    if isinstance(item, Mapping):
        if TARGET_KEY in item:
            kwargs = {key: value for key, value in item.items() if key != TARGET_KEY}
            return [ConfiguredWrapper.from_target(item[TARGET_KEY], kwargs, f"{label}.{TARGET_KEY}")]
        return [ConfiguredWrapper.from_target(target, kwargs, f"{label}.{_label(target)}")
                for target, kwargs in item.items()]
    raise ConfigError(f"{label}: expected a wrapper, a wrapper class (path) or a config mapping, "
                      f"got {type(item).__name__}")


def wrapper_layers(wrappers: WrappersLike) -> list[WrapperLayer]:
    """Normalise every accepted wrappers format into layers, innermost first."""
    wrappers = _plain_config(wrappers)
    if wrappers is None:
        return []
    if isinstance(wrappers, Mapping):
        return _layer(wrappers, "wrappers")
    if isinstance(wrappers, Sequence) and not isinstance(wrappers, str):
        return [layer for index, item in enumerate(wrappers)
                for layer in _layer(_plain_config(item), f"wrappers[{index}]")]
    raise ConfigError("wrappers: expected a list of wrapper configs or a mapping {class path: arguments}, "
                      f"got {type(wrappers).__name__}")


def build_env(env: Any) -> StructuredEnv:
    """The env (maybe already wrapped) from an instance, a config, a class (path) or a factory function."""
    env = _plain_config(env)
    try:
        if callable(env) and not isinstance(env, type | StructuredEnv):
            env = env()
        built = instantiate(env, StructuredEnv)
    except ConfigError as err:
        raise ConfigError(f"env: {err}") from err
    if not isinstance(built, StructuredEnv):
        raise ConfigError("env: expected a StructuredEnv (e.g. GymMazeEnv) or its config, "
                          f"got {type(built).__name__}")
    return built


def bottom_maze_env(env: StructuredEnv) -> MazeEnv:
    """The MazeEnv at the bottom of ``env``'s wrapper stack; its core env is what a deployment replaces."""
    maze_env = getattr(env, "maze_env", None)
    if not isinstance(maze_env, MazeEnv):
        raise ConfigError(f"env: expected a MazeEnv or wrappers around one, got {type(env).__name__}, "
                          "which has no MazeEnv at its bottom")
    return maze_env


def attach_external_core(env: StructuredEnv) -> ExternalCoreEnv:
    """Swap the bottom MazeEnv's core env for an ExternalCoreEnv over the same state space."""
    maze_env = bottom_maze_env(env)
    core = ExternalCoreEnv(getattr(maze_env.core_env, "maze_state_space", None))
    maze_env.core_env = core
    maze_env.last_maze_state = None
    maze_env.last_maze_action = None
    return core


def actor_id_source(env: StructuredEnv, core: ExternalCoreEnv) -> Callable[[], Any]:
    """Where the acting actor's id is read: the core env directly, unless a layer above redefines actor_id."""
    layer: Any = env
    while isinstance(layer, Wrapper):
        if type(layer).actor_id is not Wrapper.actor_id:
            return env.actor_id
        layer = layer.env
    if not isinstance(layer, MazeEnv) or type(layer).actor_id is not MazeEnv.actor_id:
        return env.actor_id
    return core.actor_id


def build_policy(policy: Any, env: StructuredEnv) -> Any:
    """The policy from an instance or config; configs receive the stack's spaces and the stack itself."""
    try:
        built: Any = instantiate(_plain_config(policy), None, action_spaces_dict=env.action_spaces_dict,
                                 observation_spaces_dict=env.observation_spaces_dict, env=env)
    except ConfigError as err:
        raise ConfigError(f"policy: {err}") from err
    if not callable(getattr(built, "compute_action", None)):
        raise ConfigError(f"policy: expected a StructuredPolicy (with compute_action) or its config, "
                          f"got {type(built).__name__}")
    return built


def shared_objects(root: Any, max_depth: int = 8) -> dict[int, Any]:
    """Objects under ``root`` that stay the same for every episode, keyed by id (a deepcopy memo).

    Spaces, conversions, gymnasium envs and policies, and dicts and tuples made only of those (the spaces and
    conversion dicts of a MazeEnv), are shared between clones instead of copied.
    """
    shared: dict[int, Any] = {}
    seen: set[int] = set()

    def visit(obj: Any, depth: int) -> bool:
        if isinstance(obj, _ATOMIC):
            return True
        if isinstance(obj, _SHARED_TYPES):
            shared[id(obj)] = obj
            return True
        if id(obj) in seen or depth > max_depth:
            return id(obj) in shared
        seen.add(id(obj))
        if isinstance(obj, dict | tuple):
            values = list(obj.values()) if isinstance(obj, dict) else list(obj)
            keys_atomic = not isinstance(obj, dict) or all(isinstance(key, _ATOMIC) for key in obj)
            if all([visit(value, depth + 1) for value in values]) and keys_atomic and values:
                shared[id(obj)] = obj
                return True
        elif isinstance(obj, list):
            for value in obj:
                visit(value, depth + 1)
        elif hasattr(obj, "__dict__") and not isinstance(obj, type):
            for value in vars(obj).values():
                visit(value, depth + 1)
        return False

    visit(root, 0)
    return shared


def clone_stack(template: Any, replacements: Mapping[int, Any], shared: Mapping[int, Any]) -> Any:
    """Deep copy of ``template``, with ``replacements`` (id -> object) swapped in and ``shared`` kept."""
    memo: dict[int, Any] = dict(shared)
    memo.update(replacements)
    return copy.deepcopy(template, memo)
