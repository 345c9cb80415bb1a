"""Builds the env, its wrapper stack and the policy of a rollout from configs, factories or instances.

Each of the three may be given the way the caller has it: a ``_target_`` config mapping (from YAML or a
dict), a class or dotted class path, a factory callable, or a ready instance. Wrappers accept the formats of
AgentDeployment (shared code in ``deployment.stack``): Maze's ``{class path: constructor kwargs}`` mapping or
a list of wrapper configs, applied in order, the first entry wrapping the env directly.
"""

from collections.abc import Callable, Mapping
from typing import Any, TypeAlias

from maze_engine.core.env.structured_env import StructuredEnv
from maze_engine.core.errors import ConfigError
from maze_engine.core.factory import _plain_config, instantiate
from maze_engine.deployment import stack as deployment_stack
from maze_engine.policies.policy import StructuredPolicy

EnvSpec: TypeAlias = StructuredEnv | Mapping[str, Any] | str | type | Callable[[], StructuredEnv]
"""An env: instance, ``_target_`` mapping, class (path) or zero-argument factory."""


def build_env(env: Any, **context: Any) -> StructuredEnv:
    """Turn ``env`` into a StructuredEnv; ``context`` (``render_mode``...) reaches configs that accept it."""
    if isinstance(env, StructuredEnv):
        return env
    config = _plain_config(env)
    if callable(config) and not isinstance(config, type):
        built = config()
        if not isinstance(built, StructuredEnv):
            raise ConfigError(f"env: the factory {getattr(config, '__qualname__', config)!r} returned a "
                              f"{type(built).__name__}, expected a StructuredEnv (e.g. GymMazeEnv)")
        return built
    if not isinstance(config, Mapping | str | type):
        raise ConfigError("env: expected a StructuredEnv, a config mapping with _target_, a class (path) or "
                          f"a factory, got {type(env).__name__}")
    return instantiate(config, StructuredEnv, **context)


def apply_wrappers(env: StructuredEnv, wrappers: Any) -> StructuredEnv:
    """Wrap ``env`` in each configured wrapper in order; the last one ends up outermost."""
    for layer in deployment_stack.wrapper_layers(wrappers):
        env = layer.build(env)
    return env


def build_policy(policy: Any, env: StructuredEnv) -> StructuredPolicy:
    """Turn ``policy`` into a policy; configs receive the stack's spaces (``action_spaces_dict``...)."""
    if policy is None:
        raise ConfigError("policy: expected a StructuredPolicy or a config mapping with _target_, got None")
    built: StructuredPolicy = deployment_stack.build_policy(policy, env)
    return built
