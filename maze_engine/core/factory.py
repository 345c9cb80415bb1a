"""Builds objects from ``_target_`` config mappings, class paths, classes or ready instances.

Every configurable component (env, wrapper, policy, net, composer) goes through ``instantiate``, so the same
config works from YAML, from a plain dict and from Python. Paths written for the original Maze framework
(``maze.core.wrappers.log_stats_wrapper.LogStatsWrapper``) resolve to the class of the same name here.
"""

import importlib
import inspect
from collections.abc import Mapping
from typing import Any, TypeVar

from maze_engine.core.errors import ConfigError

T = TypeVar("T")

TARGET_KEY = "_target_"


def _plain_config(config: Any) -> Any:
    """Turn OmegaConf containers into plain dicts and lists, leaving other values alone."""
    try:
        from omegaconf import DictConfig, ListConfig, OmegaConf
    except ImportError:  # pragma: no cover - omegaconf ships with hydra, a hard dependency
        return config
    if isinstance(config, DictConfig | ListConfig):
        return OmegaConf.to_container(config, resolve=True)
    return config


def resolve_target(path: str) -> Any:
    """Import the object named by a dotted ``path``.

    ``maze.*`` paths fall back to our public name of the same class.
    """
    if not isinstance(path, str) or "." not in path:
        raise ConfigError(f"{TARGET_KEY}: expected a dotted import path like 'package.module.Class', "
                          f"got {path!r}")
    module_name, _, attribute = path.rpartition(".")
    try:
        return getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError) as err:
        # A module path may also name a class inside a package (``maze.perception.models.policies.X``).
        if path.startswith("maze."):
            import maze_engine

            if attribute in maze_engine.__all__:
                return getattr(maze_engine, attribute)
        raise ConfigError(f"{TARGET_KEY}: cannot import {path!r} ({err})") from err


def accepted_kwargs(factory: Any, kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """The subset of ``kwargs`` that ``factory`` accepts (all of them if it takes ``**kwargs``)."""
    try:
        parameters = inspect.signature(factory).parameters
    except (TypeError, ValueError):
        return dict(kwargs)
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
        return dict(kwargs)
    return {key: value for key, value in kwargs.items() if key in parameters}


def instantiate(config: Any, expected_type: type[T] | None = None, **context: Any) -> T:
    """Build an object from ``config``.

    ``config`` may be an instance (returned as is), a class or dotted class path (called with the context),
    or a
    mapping with ``_target_`` whose other keys are constructor arguments. ``context`` offers extra arguments
    (``action_spaces_dict``, ``env``...) that are passed only where the constructor takes them; keys in the
    config win over the context.
    """
    config = _plain_config(config)
    if isinstance(config, str):
        config = {TARGET_KEY: config}
    if isinstance(config, type):
        factory: Any = config
        arguments: dict[str, Any] = {}
        name = config.__qualname__
    elif isinstance(config, Mapping):
        if TARGET_KEY not in config:
            raise ConfigError(f"{TARGET_KEY}: missing in config with keys {sorted(config)}; "
                              "expected a class path")
        name = str(config[TARGET_KEY])
        factory = resolve_target(name)
        arguments = {key: value for key, value in config.items() if key != TARGET_KEY}
    else:
        if expected_type is not None and not isinstance(config, expected_type):
            raise ConfigError(f"expected a {expected_type.__name__} or a config mapping with {TARGET_KEY}, "
                              f"got {type(config).__name__}")
        return config
    arguments = {**accepted_kwargs(factory, context), **arguments}
    try:
        instance = factory(**arguments)
    except TypeError as err:
        raise ConfigError(f"{TARGET_KEY}: {name} rejected its arguments {sorted(arguments)}: {err}") from err
    if expected_type is not None and not isinstance(instance, expected_type):
        raise ConfigError(f"{TARGET_KEY}: {name} built a {type(instance).__name__}, "
                          f"expected a {expected_type.__name__}")
    return instance
