"""The interface every action distribution implements, shared by policies (acting) and trainers (losses).

A distribution is built from the logits a network produced for one action key. Logits carry any number of
leading batch dimensions followed by the distribution's ``required_logits_shape``; ``log_prob`` and
``entropy`` sum over the action's own dimensions, so both return one value per batch entry.
"""

from abc import ABC, abstractmethod

import torch
from gymnasium import spaces

from maze_engine.core.errors import ConfigError


class ProbabilityDistribution(ABC):
    """A distribution over the actions of one action space, parameterised by network logits."""

    def __init__(self, logits: torch.Tensor, action_space: spaces.Space, temperature: float = 1.0) -> None:
        if not temperature > 0:
            raise ConfigError(f"temperature: expected a positive number, got {temperature}")
        required = self.required_logits_shape(action_space)
        if tuple(logits.shape[logits.dim() - len(required):]) != required or logits.dim() < len(required):
            raise ConfigError(f"logits: {type(self).__name__} for {action_space} expects logits ending in "
                              f"shape {required}, got shape {tuple(logits.shape)}")
        self.logits = logits
        self.action_space = action_space
        self.temperature = float(temperature)

    @classmethod
    @abstractmethod
    def required_logits_shape(cls, action_space: spaces.Space) -> tuple[int, ...]:
        """Logits shape (without batch dimensions) this distribution needs for ``action_space``.

        Raises ConfigError when the distribution cannot model ``action_space``.
        """

    @abstractmethod
    def sample(self, generator: torch.Generator | None = None) -> torch.Tensor:
        """A random action per batch entry (``generator`` makes sampling reproducible)."""

    @abstractmethod
    def deterministic_sample(self) -> torch.Tensor:
        """The most likely action (the mode) per batch entry."""

    @abstractmethod
    def log_prob(self, actions: torch.Tensor) -> torch.Tensor:
        """Log-probability of ``actions``, summed over the action's dimensions: shape = batch shape."""

    @abstractmethod
    def entropy(self) -> torch.Tensor:
        """Entropy, summed over the action's dimensions: shape = batch shape."""

    @property
    def batch_shape(self) -> torch.Size:
        """The leading dimensions of the logits that index independent distributions."""
        return self.logits.shape[:self.logits.dim() - len(self.required_logits_shape(self.action_space))]


def expect_space(distribution: type, action_space: spaces.Space, *kinds: type) -> None:
    """Raise a ConfigError naming the distribution when ``action_space`` is not one of ``kinds``."""
    if not isinstance(action_space, kinds):
        names = " or ".join(kind.__name__ for kind in kinds)
        raise ConfigError(f"distribution: {distribution.__name__} models {names} action spaces, "
                          f"got {type(action_space).__name__}")


def sum_trailing(values: torch.Tensor, num_dims: int) -> torch.Tensor:
    """Sum over the last ``num_dims`` dimensions (the action's own dimensions)."""
    if num_dims == 0:
        return values
    return values.sum(dim=tuple(range(values.dim() - num_dims, values.dim())))
