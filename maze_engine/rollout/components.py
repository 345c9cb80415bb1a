"""Builds the env, its wrapper stack and the policy of a rollout from configs, factories or instances.

Each of the three may be given the way the caller has it: a ``_target_`` config mapping (from YAML or a
dict), a class or dotted class path, a factory callable, or a ready instance. Wrapper stacks come in the
format of the original Maze framework's ``wrappers`` config, a mapping ``{class path: constructor kwargs}``
applied in order (the first entry wraps the env directly), or as a list of wrapper configs.
"""

from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeAlias

from omegaconf import DictConfig, ListConfig, OmegaConf

from maze_engine.core.env.structured_env import StructuredEnv
from maze_engine.core.errors import ConfigError
from maze_engine.core.factory import TARGET_KEY, instantiate
from maze_engine.policies.policy import StructuredPolicy

EnvSpec: TypeAlias = StructuredEnv | Mapping[str, Any] | str | type | Callable[[], StructuredEnv]
"""An env: instance, ``_target_`` mapping, class (path) or zero-argument factory."""

WrappersSpec: TypeAlias = Mapping[Any, Any] | Sequence[Any] | None
"""Wrappers: ``{class path or class: kwargs}``, a list of wrapper configs, or None / empty for none."""

PolicySpec: TypeAlias = StructuredPolicy | Mapping[str, Any] | str | type
"""A policy: instance, ``_target_`` mapping or class (path); configs receive the env's spaces."""


def plain_config(config: Any) -> Any:
    """OmegaConf containers (from Hydra) as plain dicts and lists; other values unchanged."""
    if isinstance(config, DictConfig | ListConfig):
        return OmegaConf.to_container(config, resolve=True)
    return config


def build_env(env: Any, **context: Any) -> StructuredEnv:
    """Turn ``env`` into a StructuredEnv; ``context`` (``render_mode``...) reaches configs that accept it."""
    if isinstance(env, StructuredEnv):
        return env
    config = plain_config(env)
    if callable(config) and not isinstance(config, type):
        built = config()
        if not isinstance(built, StructuredEnv):
            raise ConfigError(f"env: the factory {_name(config)} returned a {type(built).__name__}, "
                              "expected a StructuredEnv (e.g. GymMazeEnv)")
        return built
    if config is None or not isinstance(config, Mapping | str | type):
        raise ConfigError("env: expected a StructuredEnv, a config mapping with _target_, a class (path) or "
                          f"a factory, got {type(env).__name__}")
    return instantiate(config, StructuredEnv, **context)


def _name(obj: Any) -> str:
    return getattr(obj, "__qualname__", type(obj).__name__)


def wrapper_configs(wrappers: Any) -> list[Any]:
    """Normalise any accepted wrappers format into a list of single-wrapper configs, innermost first."""
    wrappers = plain_config(wrappers)
    if wrappers is None:
        return []
    if isinstance(wrappers, Mapping):
        if TARGET_KEY in wrappers:
            return [dict(wrappers)]
        configs: list[Any] = []
        for target, kwargs in wrappers.items():
            if kwargs is None:
                kwargs = {}
            label = _name(target) if isinstance(target, type) else target
            if not isinstance(kwargs, Mapping):
                raise ConfigError(f"wrappers.{label}: expected a mapping of constructor arguments, "
                                  f"got {type(kwargs).__name__}")
            if isinstance(target, str):
                configs.append({TARGET_KEY: target, **kwargs})
            else:
                configs.append((target, dict(kwargs)))
        return configs
    if isinstance(wrappers, Sequence) and not isinstance(wrappers, str):
        return list(wrappers)
    raise ConfigError("wrappers: expected a mapping {class path: arguments}, a list of wrapper configs or "
                      f"nothing, got {type(wrappers).__name__}")


def apply_wrappers(env: StructuredEnv, wrappers: Any) -> StructuredEnv:
    """Wrap ``env`` in each configured wrapper in order; the last one ends up outermost."""
    for config in wrapper_configs(wrappers):
        if isinstance(config, tuple):  # (wrapper class, kwargs) from a mapping keyed by classes
            cls, kwargs = config
            try:
                env = cls(env, **kwargs)
            except TypeError as err:
                raise ConfigError(f"wrappers.{cls.__qualname__}: rejected its arguments {sorted(kwargs)}: "
                                  f"{err}") from err
        elif callable(config) and not isinstance(config, type):
            env = config(env)
            if not isinstance(env, StructuredEnv):
                raise ConfigError(f"wrappers: {_name(config)} returned a {type(env).__name__}, "
                                  "expected a StructuredEnv")
        else:
            env = instantiate(config, StructuredEnv, env=env)
    return env


def build_policy(policy: Any, env: StructuredEnv) -> StructuredPolicy:
    """Turn ``policy`` into a StructuredPolicy; configs get the env's ``action_spaces_dict`` and friends."""
    if policy is None:
        raise ConfigError("policy: expected a StructuredPolicy or a config mapping with _target_, got None")
    return instantiate(policy, StructuredPolicy,
                       action_spaces_dict=env.action_spaces_dict,
                       observation_spaces_dict=env.observation_spaces_dict,
                       agent_counts_dict=env.agent_counts_dict)
