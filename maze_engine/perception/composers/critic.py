"""Critic composers: build the state critic (value networks) of an actor-critic model from spaces.

``SharedStateCriticComposer`` builds one net for every step and agent (the usual choice for gym-style envs);
``StateCriticComposer`` one net per step.
"""

from collections.abc import Mapping
from typing import Any

import torch
from gymnasium import spaces
from torch import nn

from maze_engine.core.errors import ConfigError
from maze_engine.core.factory import _plain_config
from maze_engine.perception.composers.networks import (
    StepKey,
    build_network,
    dry_run,
    entries_per_step,
    find_step_entry,
    observation_shapes,
)
from maze_engine.perception.critic import TorchStateCritic


def _check_value(output: Mapping[str, Any], field: str) -> None:
    value = output.get("value")
    if not isinstance(value, torch.Tensor) or tuple(value.shape) not in ((2,), (2, 1)):
        got = tuple(value.shape) if isinstance(value, torch.Tensor) else f"keys {sorted(output)}"
        raise ConfigError(f"{field}: a value net must return {{'value': tensor [batch, 1]}}; for a batch "
                          f"of 2 it returned {got}")


def _build_value_net(entry: Any, obs_shapes: dict[str, tuple[int, ...]], field: str) -> nn.Module:
    net = build_network(entry, field, obs_shapes)
    _check_value(dry_run(net, obs_shapes, field), field)
    return net


class _CriticComposer:
    """Common arguments: spaces per step and the agent counts (taken from the env when built from config)."""

    def __init__(self, observation_spaces_dict: Mapping[StepKey, spaces.Dict],
                 agent_counts_dict: Mapping[StepKey, int] | None) -> None:
        if not observation_spaces_dict:
            raise ConfigError("observation_spaces_dict: expected at least one step's observation space")
        self.observation_spaces_dict = dict(observation_spaces_dict)
        counts = _plain_config(agent_counts_dict)
        self.agent_counts_dict = {
            step: int(find_step_entry(counts, step, "agent_counts_dict")) if counts else 1
            for step in self.observation_spaces_dict}
        self._critic: TorchStateCritic | None = None

    @property
    def critic(self) -> TorchStateCritic:
        """The composed critic (the same instance on every access)."""
        assert self._critic is not None
        return self._critic


class SharedStateCriticComposer(_CriticComposer):
    """One value net shared by all steps and agents.

    With ``stack_observations=False`` the net sees the acting step's observation, so every step must have
    the same observation keys and shapes. With ``stack_observations=True`` the net is built over the union of
    all steps' observation keys, and callers pass the observations of all sub-steps merged into one dict.
    ``networks``: a list of one net, a mapping with one entry, or a single net or config.
    """

    def __init__(self, observation_spaces_dict: Mapping[StepKey, spaces.Dict],
                 agent_counts_dict: Mapping[StepKey, int] | None = None, networks: Any = None,
                 stack_observations: bool = False, device: str | torch.device = "cpu") -> None:
        super().__init__(observation_spaces_dict, agent_counts_dict)
        self.stack_observations = bool(stack_observations)
        self.obs_shapes = self._shared_obs_shapes()
        networks = _plain_config(networks)
        if isinstance(networks, Mapping) and "_target_" not in networks:
            networks = list(networks.values())
        first_step = next(iter(self.observation_spaces_dict))
        entries = entries_per_step(networks, [first_step])
        net = _build_value_net(entries[first_step], self.obs_shapes, "critic.networks[0]")
        self._critic = TorchStateCritic({TorchStateCritic.SHARED_KEY: net}, shared=True, device=device)

    def _shared_obs_shapes(self) -> dict[str, tuple[int, ...]]:
        per_step = {step: observation_shapes(space) for step, space in self.observation_spaces_dict.items()}
        first_step, first = next(iter(per_step.items()))
        if not self.stack_observations:
            for step, shapes in per_step.items():
                if shapes != first:
                    raise ConfigError(f"observation_spaces_dict[{step!r}]: a shared critic without "
                                      "stack_observations needs the same observations in every step (step "
                                      f"{first_step!r} has {first}, got {shapes}); use "
                                      "stack_observations=True or StateCriticComposer")
            return first
        merged: dict[str, tuple[int, ...]] = {}
        for step, shapes in per_step.items():
            for key, shape in shapes.items():
                if merged.setdefault(key, shape) != shape:
                    raise ConfigError(f"observation_spaces_dict[{step!r}].{key}: stacked observations need "
                                      f"one shape per key, expected {merged[key]}, got {shape}")
        return merged


class StateCriticComposer(_CriticComposer):
    """One value net per step, each built on that step's observation space."""

    def __init__(self, observation_spaces_dict: Mapping[StepKey, spaces.Dict],
                 agent_counts_dict: Mapping[StepKey, int] | None = None, networks: Any = None,
                 device: str | torch.device = "cpu") -> None:
        super().__init__(observation_spaces_dict, agent_counts_dict)
        built = {}
        for step, entry in entries_per_step(networks, list(self.observation_spaces_dict)).items():
            shapes = observation_shapes(self.observation_spaces_dict[step])
            built[step] = _build_value_net(entry, shapes, f"critic.networks[{step!r}]")
        self._critic = TorchStateCritic(built, shared=False, device=device)
