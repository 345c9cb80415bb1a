"""Typed containers for what the collect step produces and what an update consumes."""

from collections.abc import Iterator
from typing import NamedTuple

import numpy as np
import torch


class Rollout(NamedTuple):
    """``n_rollout_steps`` steps of ``n_envs`` envs as collected, time-major numpy arrays ``[T, N, ...]``."""

    observations: dict[str, np.ndarray]
    """Observation each step was taken in, per key ``[T, N, ...]``."""
    actions: dict[str, np.ndarray]
    """Action taken, per key ``[T, N, ...]``."""
    rewards: np.ndarray
    """float32 ``[T, N]``."""
    dones: np.ndarray
    """bool ``[T, N]``: the episode ended with this step."""
    truncated: np.ndarray
    """bool ``[T, N]``: it ended by a time limit (its value is bootstrapped from ``final_observations``)."""
    final_observations: dict[str, np.ndarray]
    """Last observation of each truncated episode, per key ``[K, ...]``, ordered like ``truncated_index``."""
    truncated_index: np.ndarray
    """int ``[K, 2]``: the (t, n) position of each truncated step."""
    last_observations: dict[str, np.ndarray]
    """Observation after the last step, per key ``[N, ...]`` (bootstraps the rollout's tail)."""

    @property
    def n_steps(self) -> int:
        return int(self.rewards.shape[0])

    @property
    def n_envs(self) -> int:
        return int(self.rewards.shape[1])


class RolloutBatch(NamedTuple):
    """A rollout flattened to ``T * N`` samples, with value targets, on the training device."""

    observations: dict[str, torch.Tensor]
    """Per key ``[B, ...]``."""
    actions: dict[str, torch.Tensor]
    """Per key ``[B, ...]``."""
    advantages: torch.Tensor
    """GAE advantages ``[B]``."""
    returns: torch.Tensor
    """Value targets ``[B]`` (advantages + old values)."""
    old_values: torch.Tensor
    """Critic values at collection time ``[B]``."""
    old_log_probs: torch.Tensor
    """Log-probabilities of the actions at collection time ``[B]`` (empty when the algorithm needs none)."""

    @property
    def size(self) -> int:
        return int(self.advantages.shape[0])

    def select(self, index: torch.Tensor) -> "RolloutBatch":
        """The samples at ``index`` (a mini-batch)."""
        return RolloutBatch(
            observations={key: value[index] for key, value in self.observations.items()},
            actions={key: value[index] for key, value in self.actions.items()},
            advantages=self.advantages[index],
            returns=self.returns[index],
            old_values=self.old_values[index],
            old_log_probs=self.old_log_probs[index] if self.old_log_probs.numel() else self.old_log_probs)

    def minibatches(self, batch_size: int,
                    generator: torch.Generator | None = None) -> Iterator["RolloutBatch"]:
        """Shuffled mini-batches of ``batch_size`` samples (the last one may be smaller)."""
        permutation = torch.randperm(self.size, generator=generator).to(self.advantages.device)
        for start in range(0, self.size, batch_size):
            yield self.select(permutation[start:start + batch_size])
