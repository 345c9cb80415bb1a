"""State critics: value networks that predict the return from an observation, for actor-critic training."""

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from maze_engine.core.actor_id import ActorID
from maze_engine.core.errors import ConfigError, SpaceMismatchError
from maze_engine.perception.torch_networks import TorchNetworks

StepKey = int | str


class TorchStateCritic(TorchNetworks):
    """Value nets keyed by step; ``predict_values`` returns one value per batch entry.

    A shared critic holds a single net (key ``shared``) used for every step; a step critic one net per step.
    Nets return ``{"value": tensor [*batch, 1]}`` (or ``[*batch]``).
    """

    SHARED_KEY = "shared"

    def __init__(self, networks: Mapping[Any, nn.Module], shared: bool,
                 device: str | torch.device = "cpu") -> None:
        if not networks:
            raise ConfigError("networks: expected at least one value network, got an empty mapping")
        if shared and len(networks) != 1:
            raise ConfigError(f"networks: a shared critic has exactly one net, got {len(networks)}")
        self.shared = shared
        self._names = {key: self.SHARED_KEY if shared else str(key) for key in networks}
        self.networks = nn.ModuleDict({self._names[key]: net for key, net in networks.items()})
        self.device = torch.device(device)
        self.networks.to(self.device)

    def network(self, actor_id: ActorID | None = None) -> nn.Module:
        """The value net used for ``actor_id`` (the shared one, or the step's own)."""
        if self.shared:
            return self.networks[self.SHARED_KEY]
        if actor_id is None:
            return next(iter(self.networks.values()))
        name = self._names.get(actor_id.step_key)
        if name is None:
            raise ConfigError(f"actor_id.step_key: expected one of {list(self._names)}, "
                              f"got {actor_id.step_key!r}")
        return self.networks[name]

    def predict_values(self, obs_tensors: Mapping[str, torch.Tensor],
                       actor_id: ActorID | None = None) -> torch.Tensor:
        """State values for a batch of observation tensors: shape = batch shape."""
        output = self.network(actor_id)(obs_tensors)
        value = output["value"] if isinstance(output, Mapping) else output
        if not isinstance(value, torch.Tensor):
            raise SpaceMismatchError("critic output", "a dict with a 'value' tensor", type(output).__name__)
        return value.squeeze(-1) if value.dim() > 0 and value.shape[-1] == 1 else value

    def predict_value(self, observation: Mapping[str, Any], actor_id: ActorID | None = None) -> float:
        """The value of one numpy observation (no autograd); handy for inspection and bootstrapping."""
        tensors = {key: torch.as_tensor(value, dtype=torch.float32, device=self.device).unsqueeze(0)
                   for key, value in observation.items()}
        with torch.inference_mode():
            return float(self.predict_values(tensors, actor_id)[0])
