"""ProbabilisticPolicyComposer: builds a TorchPolicy (one net and distribution mapper per step) from spaces.

>>> from maze_engine import GymMazeEnv
>>> env = GymMazeEnv("CartPole-v1")
>>> composer = ProbabilisticPolicyComposer(
...     action_spaces_dict=env.action_spaces_dict, observation_spaces_dict=env.observation_spaces_dict,
...     distribution_mapper=None,
...     networks=[{"_target_": "maze_engine.FlattenConcatPolicyNet", "hidden_units": [16],
...                "non_lin": "tanh"}],
...     substeps_with_separate_agent_nets=[], agent_counts_dict={0: 1})
>>> sorted(composer.policy.compute_action(env.reset()))
['action']
"""

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from gymnasium import spaces
from torch import nn

from maze_engine.core.errors import ConfigError
from maze_engine.core.factory import TARGET_KEY, _plain_config, instantiate
from maze_engine.perception.composers.networks import (
    StepKey,
    build_network,
    copies_per_agent,
    dry_run,
    entries_per_step,
    find_step_entry,
    observation_shapes,
)
from maze_engine.perception.distributions.mapper import DistributionMapper
from maze_engine.policies.torch_policy import NetworkKey, TorchPolicy


def build_distribution_mappers(
        distribution_mapper: Any,
        action_spaces_dict: Mapping[StepKey, spaces.Space]) -> dict[StepKey, DistributionMapper]:
    """One DistributionMapper per step from an instance, a per-step mapping, a config or nothing (defaults).

    An instance made for another action space (seed code builds one for ``env.action_space`` only) lends its
    configuration to the other steps' mappers.
    """
    distribution_mapper = _plain_config(distribution_mapper)
    result: dict[StepKey, DistributionMapper] = {}
    step_names = {str(step) for step in action_spaces_dict}
    for step, action_space in action_spaces_dict.items():
        entry = distribution_mapper
        if isinstance(entry, Mapping) and entry and all(str(key) in step_names for key in entry):
            entry = find_step_entry(entry, step, "distribution_mapper")
        if isinstance(entry, DistributionMapper):
            result[step] = entry if entry.action_space == action_space else \
                DistributionMapper(action_space, entry.distribution_mapper_config)
        elif isinstance(entry, Mapping) and TARGET_KEY in entry:
            result[step] = instantiate(entry, DistributionMapper, action_space=action_space)
        elif isinstance(entry, Mapping) and "distribution_mapper_config" in entry:
            result[step] = DistributionMapper(action_space, entry["distribution_mapper_config"])
        elif entry is None or isinstance(entry, Sequence | Mapping):
            result[step] = DistributionMapper(action_space, entry)
        else:
            raise ConfigError(f"distribution_mapper: expected a DistributionMapper, its config or a list of "
                              f"distribution_mapper_config entries, got {type(entry).__name__}")
    return result


def _check_logits(output: Mapping[str, Any], required: Mapping[str, Any], field: str) -> None:
    for key, shape in required.items():
        if key not in output:
            raise ConfigError(f"{field}: the net returns no logits for action {key!r}; it returned keys "
                              f"{sorted(output)}")
        value = output[key]
        if isinstance(shape, dict):
            if not isinstance(value, Mapping):
                raise ConfigError(f"{field}.{key}: expected a dict of logits for a nested Dict action space")
            _check_logits(value, shape, f"{field}.{key}")
        elif not isinstance(value, torch.Tensor) or tuple(value.shape) != (2,) + tuple(shape):
            got = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
            raise ConfigError(f"{field}: logits for action {key!r} must have shape [batch, *{tuple(shape)}]; "
                              f"for a batch of 2 the net returned {got}")


class ProbabilisticPolicyComposer:
    """Composes a TorchPolicy whose actions are sampled from distributions over network logits.

    ``networks``: a list (one entry per step, in the order of ``action_spaces_dict``), a mapping keyed by
    step, or a single config for every step; entries are nn.Modules or ``_target_`` configs, which are
    built with ``obs_shapes`` and the action logits shapes (``action_logits_shapes`` or
    ``action_logit_shapes``, whichever the net's constructor declares). For steps in
    ``substeps_with_separate_agent_nets`` every agent gets its own net. ``distribution_mapper``: an
    instance, a config, a per-step mapping, or None (defaults).
    """

    def __init__(self, action_spaces_dict: Mapping[StepKey, spaces.Dict],
                 observation_spaces_dict: Mapping[StepKey, spaces.Dict],
                 distribution_mapper: Any = None, networks: Any = None,
                 substeps_with_separate_agent_nets: Sequence[StepKey] | None = None,
                 agent_counts_dict: Mapping[StepKey, int] | None = None,
                 device: str | torch.device = "cpu") -> None:
        if not action_spaces_dict:
            raise ConfigError("action_spaces_dict: expected at least one step's action space")
        missing = [step for step in action_spaces_dict if step not in observation_spaces_dict]
        if missing:
            raise ConfigError(f"observation_spaces_dict: no observation space for step {missing[0]!r}")
        self.action_spaces_dict = dict(action_spaces_dict)
        self.observation_spaces_dict = {step: observation_spaces_dict[step] for step in action_spaces_dict}
        self.agent_counts_dict = {step: int(find_step_entry(agent_counts_dict, step, "agent_counts_dict"))
                                  if agent_counts_dict else 1 for step in action_spaces_dict}
        separate = [str(step) for step in _plain_config(substeps_with_separate_agent_nets) or []]
        unknown = [step for step in separate if step not in map(str, action_spaces_dict)]
        if unknown:
            raise ConfigError(f"substeps_with_separate_agent_nets: {unknown[0]!r} is not a step key; "
                              f"expected one of {list(action_spaces_dict)}")
        self.substeps_with_separate_agent_nets = [step for step in action_spaces_dict
                                                  if str(step) in separate]
        self.distribution_mappers = build_distribution_mappers(distribution_mapper, self.action_spaces_dict)
        self.networks = self._build_networks(networks)
        self._policy = TorchPolicy(self.networks, self.distribution_mappers, device=device,
                                   observation_spaces_dict=self.observation_spaces_dict)

    @property
    def distribution_mapper(self) -> DistributionMapper:
        """The distribution mapper of the first step (the only one in single-step envs)."""
        return next(iter(self.distribution_mappers.values()))

    def _build_networks(self, networks: Any) -> dict[NetworkKey, nn.Module]:
        built: dict[NetworkKey, nn.Module] = {}
        for step, entry in entries_per_step(networks, list(self.action_spaces_dict)).items():
            obs_shapes = observation_shapes(self.observation_spaces_dict[step])
            logits_shapes = self.distribution_mappers[step].required_logits_shapes()

            def build(item: Any, agent: int | None, step: StepKey = step, obs_shapes: Any = obs_shapes,
                      logits_shapes: Any = logits_shapes) -> nn.Module:
                field = f"networks[{step!r}]" + ("" if agent is None else f"[agent {agent}]")
                net = build_network(item, field, obs_shapes, logits_shapes)
                _check_logits(dry_run(net, obs_shapes, field), logits_shapes, field)
                return net

            if step in self.substeps_with_separate_agent_nets:
                for agent, net in enumerate(copies_per_agent(entry, self.agent_counts_dict[step], build,
                                                             f"networks[{step!r}]")):
                    built[(step, agent)] = net
            else:
                built[step] = build(entry, None)
        return built

    @property
    def policy(self) -> TorchPolicy:
        """The composed policy (the same instance on every access)."""
        return self._policy
