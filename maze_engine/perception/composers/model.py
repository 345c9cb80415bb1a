"""Build the policy and critic composers of a model from the ``model`` node of a config.

The node looks like ``conf/model/vector_obs.yaml``::

    distribution_mapper_config: []
    policy: {_target_: maze_engine.ProbabilisticPolicyComposer, networks: [...]}
    critic: {_target_: maze_engine.SharedStateCriticComposer, networks: [...]}   # optional

Spaces, agent counts and the distribution mappers come from the env (or from a run directory's
spaces.json) and are offered to the composers as constructor context. Composer instances pass through.
"""

from collections.abc import Mapping
from typing import Any

from gymnasium import spaces

from maze_engine.core.errors import ConfigError
from maze_engine.core.factory import _plain_config, instantiate
from maze_engine.perception.composers.critic import SharedStateCriticComposer, StateCriticComposer
from maze_engine.perception.composers.networks import StepKey
from maze_engine.perception.composers.policy import ProbabilisticPolicyComposer, build_distribution_mappers

CriticComposer = SharedStateCriticComposer | StateCriticComposer

MODEL_KEYS = ("distribution_mapper_config", "policy", "critic")


def _node(model_config: Any, key: str) -> Any:
    if isinstance(model_config, Mapping):
        return model_config.get(key)
    return getattr(model_config, key, None)


def build_model_composers_from_spaces(
        model_config: Any, action_spaces_dict: Mapping[StepKey, spaces.Space],
        observation_spaces_dict: Mapping[StepKey, spaces.Space],
        agent_counts_dict: Mapping[StepKey, int] | None = None,
        device: str = "cpu") -> tuple[ProbabilisticPolicyComposer, CriticComposer | None]:
    """``(policy_composer, critic_composer or None)`` for the given spaces."""
    model_config = _plain_config(model_config)
    if model_config is None:
        raise ConfigError("model: expected a model config with a 'policy' entry, got None")
    if isinstance(model_config, Mapping):
        unknown = sorted(set(model_config) - set(MODEL_KEYS))
        if unknown:
            raise ConfigError(f"model.{unknown[0]}: unexpected key; expected {list(MODEL_KEYS)}")
    policy_config = _node(model_config, "policy")
    if policy_config is None:
        raise ConfigError("model.policy: missing; expected a ProbabilisticPolicyComposer config or instance")
    counts = dict(agent_counts_dict) if agent_counts_dict else {step: 1 for step in action_spaces_dict}
    mapper_config = _node(model_config, "distribution_mapper_config")
    mappers = build_distribution_mappers(mapper_config, action_spaces_dict)
    context = {"action_spaces_dict": dict(action_spaces_dict),
               "observation_spaces_dict": dict(observation_spaces_dict),
               "agent_counts_dict": counts, "distribution_mapper": mappers, "device": device}
    try:
        policy = instantiate(policy_config, ProbabilisticPolicyComposer, **context)
    except ConfigError as err:
        raise ConfigError(f"model.policy: {err}") from err
    critic_config = _node(model_config, "critic")
    critic: CriticComposer | None = None
    if critic_config is not None:
        try:
            critic = instantiate(critic_config, None, **context)
        except ConfigError as err:
            raise ConfigError(f"model.critic: {err}") from err
        if not hasattr(critic, "critic"):
            raise ConfigError(f"model.critic: expected a critic composer (with a .critic), "
                              f"got {type(critic).__name__}")
    return policy, critic


def build_model_composers(model_config: Any, env: Any,
                          device: str = "cpu") -> tuple[ProbabilisticPolicyComposer, CriticComposer | None]:
    """``(policy_composer, critic_composer or None)`` for ``env`` (a StructuredEnv, possibly wrapped)."""
    return build_model_composers_from_spaces(model_config, env.action_spaces_dict,
                                             env.observation_spaces_dict, env.agent_counts_dict,
                                             device=device)
