"""A joint distribution over the keys of a Dict action space: independent parts, summed log-probabilities."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeAlias

import torch

from maze_engine.core.errors import SpaceMismatchError
from maze_engine.perception.distributions.base import ProbabilityDistribution


class DictProbabilityDistribution:
    """Independent distributions keyed by action name (values may be nested DictProbabilityDistributions).

    ``sample`` and ``deterministic_sample`` return dicts of tensors; ``log_prob`` takes such a dict and, like
    ``entropy``, returns the sum over all keys (one value per batch entry).
    """

    def __init__(self, distribution_dict: Mapping[str, DistributionPart]) -> None:
        self.distribution_dict: dict[str, DistributionPart] = dict(distribution_dict)

    def __getitem__(self, key: str) -> DistributionPart:
        return self.distribution_dict[key]

    def __iter__(self) -> Any:
        return iter(self.distribution_dict)

    def __len__(self) -> int:
        return len(self.distribution_dict)

    def items(self) -> Any:
        return self.distribution_dict.items()

    def sample(self, generator: torch.Generator | None = None) -> dict[str, Any]:
        """A random action dict (one tensor per key, batched)."""
        return {key: part.sample(generator) for key, part in self.distribution_dict.items()}

    def deterministic_sample(self) -> dict[str, Any]:
        """The most likely action dict."""
        return {key: part.deterministic_sample() for key, part in self.distribution_dict.items()}

    def log_prob(self, actions: Mapping[str, Any]) -> torch.Tensor:
        """Sum of the log-probabilities of every key's action."""
        return self._sum(lambda key, part: part.log_prob(self._action(actions, key)))

    def entropy(self) -> torch.Tensor:
        """Sum of the entropies of every key."""
        return self._sum(lambda key, part: part.entropy())

    def log_prob_dict(self, actions: Mapping[str, Any]) -> dict[str, torch.Tensor]:
        """Log-probability per key (useful for per-head statistics)."""
        return {key: part.log_prob(self._action(actions, key))
                for key, part in self.distribution_dict.items()}

    def entropy_dict(self) -> dict[str, torch.Tensor]:
        """Entropy per key."""
        return {key: part.entropy() for key, part in self.distribution_dict.items()}

    @staticmethod
    def _action(actions: Mapping[str, Any], key: str) -> Any:
        if key not in actions:
            raise SpaceMismatchError(f"actions.{key}", "an action for every key of the distribution",
                                     f"keys {sorted(actions)}")
        return actions[key]

    def _sum(self, term: Any) -> torch.Tensor:
        total: torch.Tensor | None = None
        for key, part in self.distribution_dict.items():
            value = term(key, part)
            total = value if total is None else total + value
        assert total is not None, "a DictProbabilityDistribution needs at least one key"
        return total


DistributionPart: TypeAlias = "ProbabilityDistribution | DictProbabilityDistribution"
"""What a DictProbabilityDistribution holds per key: a leaf distribution or a nested dict distribution."""
