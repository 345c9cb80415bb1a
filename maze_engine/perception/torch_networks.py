"""What a torch policy and a torch critic share: their nets as one ``nn.ModuleDict`` on one device."""

from collections.abc import Mapping
from typing import Any, Self

import torch
from torch import nn


class TorchNetworks:
    """Nets held as ``networks`` on ``device``: moved, switched between training and evaluation mode, saved
    and loaded together (``TorchPolicy``, ``TorchStateCritic``)."""

    networks: nn.ModuleDict
    device: torch.device

    def parameters(self) -> Any:
        """All trainable parameters of all nets."""
        return self.networks.parameters()

    def to(self, device: str | torch.device) -> Self:
        """Move the nets to ``device``."""
        self.device = torch.device(device)
        self.networks.to(self.device)
        return self

    def train(self, mode: bool = True) -> Self:
        """Put the nets in training mode."""
        self.networks.train(mode)
        return self

    def eval(self) -> Self:
        """Put the nets in evaluation mode (dropout off, batch norm frozen)."""
        self.networks.eval()
        return self

    def state_dict(self) -> dict[str, Any]:
        """Weights of all nets, keyed ``<network name>.<parameter>``."""
        return self.networks.state_dict()

    def load_state_dict(self, state_dict: Mapping[str, Any], strict: bool = True) -> None:
        """Load weights saved by ``state_dict``."""
        self.networks.load_state_dict(state_dict, strict=strict)
