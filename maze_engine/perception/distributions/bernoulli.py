"""Independent Bernoulli distributions for MultiBinary action spaces."""

import torch
import torch.nn.functional as F
from gymnasium import spaces

from maze_engine.perception.distributions.base import ProbabilityDistribution, expect_space, sum_trailing


class BernoulliProbabilityDistribution(ProbabilityDistribution):
    """One Bernoulli per entry of a MultiBinary space.

    Logits have the space's shape (``[..., *shape]``), each the log-odds of a 1. Actions are float tensors of
    zeros and ones with the same shape. A temperature divides the log-odds.
    """

    def __init__(self, logits: torch.Tensor, action_space: spaces.Space, temperature: float = 1.0) -> None:
        super().__init__(logits, action_space, temperature)
        self.log_odds = logits if temperature == 1.0 else logits / temperature
        self.event_dims = len(self.required_logits_shape(action_space))

    @classmethod
    def required_logits_shape(cls, action_space: spaces.Space) -> tuple[int, ...]:
        expect_space(cls, action_space, spaces.MultiBinary)
        assert action_space.shape is not None
        return tuple(int(n) for n in action_space.shape)

    @property
    def probs(self) -> torch.Tensor:
        """Probability of a 1 per entry."""
        return torch.sigmoid(self.log_odds)

    def sample(self, generator: torch.Generator | None = None) -> torch.Tensor:
        return torch.bernoulli(self.probs, generator=generator)

    def deterministic_sample(self) -> torch.Tensor:
        return (self.log_odds > 0).to(self.log_odds.dtype)

    def log_prob(self, actions: torch.Tensor) -> torch.Tensor:
        targets = actions.to(self.log_odds.dtype)
        per_entry = -F.binary_cross_entropy_with_logits(self.log_odds, targets, reduction="none")
        return sum_trailing(per_entry, self.event_dims)

    def entropy(self) -> torch.Tensor:
        # H = softplus(l) - p * l, written so large |l| neither overflows nor loses precision.
        per_entry = F.softplus(self.log_odds) - self.probs * self.log_odds
        return sum_trailing(per_entry, self.event_dims)
