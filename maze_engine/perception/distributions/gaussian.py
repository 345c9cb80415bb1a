"""Gaussian distributions for Box action spaces: a plain diagonal one and a tanh-squashed bounded one."""

import math

import numpy as np
import torch
import torch.nn.functional as F
from gymnasium import spaces

from maze_engine.core.errors import ConfigError
from maze_engine.perception.distributions.base import ProbabilityDistribution, expect_space, sum_trailing

LOG_STD_MIN = -20.0
LOG_STD_MAX = 2.0
_HALF_LOG_2PI = 0.5 * math.log(2.0 * math.pi)


class DiagonalGaussianProbabilityDistribution(ProbabilityDistribution):
    """A normal distribution per entry of a Box space, with mean and log standard deviation from the net.

    For a Box of shape ``(..., d)`` the logits have shape ``(..., 2 * d)``: the first ``d`` values of the last
    dimension are the means, the last ``d`` the log standard deviations (clamped to [-20, 2]). The temperature
    scales the standard deviation. Samples are not clipped here (clipping would bias the log-probabilities);
    the policy clips actions to the space's bounds before they reach the env.
    """

    def __init__(self, logits: torch.Tensor, action_space: spaces.Space, temperature: float = 1.0) -> None:
        super().__init__(logits, action_space, temperature)
        self.mean, log_std = torch.chunk(logits, 2, dim=-1)
        self.log_std = log_std.clamp(LOG_STD_MIN, LOG_STD_MAX)
        if temperature != 1.0:
            self.log_std = self.log_std + math.log(temperature)
        self.std = self.log_std.exp()
        assert action_space.shape is not None
        self.event_dims = len(action_space.shape)

    @classmethod
    def required_logits_shape(cls, action_space: spaces.Space) -> tuple[int, ...]:
        expect_space(cls, action_space, spaces.Box)
        shape = action_space.shape
        assert shape is not None
        if len(shape) == 0:
            raise ConfigError(f"action_space: {cls.__name__} needs a Box with at least one dimension, "
                              "got shape ()")
        return tuple(int(n) for n in shape[:-1]) + (2 * int(shape[-1]),)

    def _gaussian_log_prob(self, values: torch.Tensor) -> torch.Tensor:
        """Per-entry log density of the underlying normal distribution."""
        return -0.5 * ((values - self.mean) / self.std) ** 2 - self.log_std - _HALF_LOG_2PI

    def _gaussian_entropy(self) -> torch.Tensor:
        return 0.5 + _HALF_LOG_2PI + self.log_std

    def sample(self, generator: torch.Generator | None = None) -> torch.Tensor:
        noise = torch.randn(self.mean.shape, generator=generator, device=self.mean.device,
                            dtype=self.mean.dtype)
        return self.mean + self.std * noise

    def deterministic_sample(self) -> torch.Tensor:
        return self.mean

    def log_prob(self, actions: torch.Tensor) -> torch.Tensor:
        return sum_trailing(self._gaussian_log_prob(actions.to(self.mean.dtype)), self.event_dims)

    def entropy(self) -> torch.Tensor:
        return sum_trailing(self._gaussian_entropy().expand_as(self.mean), self.event_dims)


class SquashedGaussianProbabilityDistribution(DiagonalGaussianProbabilityDistribution):
    """A diagonal Gaussian pushed through tanh and rescaled to the Box bounds, so every sample is in bounds.

    Needs finite bounds. ``log_prob`` applies the change-of-variables correction. The entropy has no closed
    form; it is the Gaussian entropy plus the log-Jacobian of the squashing evaluated at the mean (a
    deterministic, differentiable estimate suited as a regulariser).
    """

    _EPSILON = 1e-6

    def __init__(self, logits: torch.Tensor, action_space: spaces.Space, temperature: float = 1.0) -> None:
        super().__init__(logits, action_space, temperature)
        assert isinstance(action_space, spaces.Box)
        low = torch.as_tensor(np.asarray(action_space.low, dtype=np.float64), dtype=logits.dtype,
                              device=logits.device)
        high = torch.as_tensor(np.asarray(action_space.high, dtype=np.float64), dtype=logits.dtype,
                               device=logits.device)
        self.center = (high + low) / 2.0
        self.half_range = (high - low) / 2.0

    @classmethod
    def required_logits_shape(cls, action_space: spaces.Space) -> tuple[int, ...]:
        shape = super().required_logits_shape(action_space)
        assert isinstance(action_space, spaces.Box)
        if not (np.all(np.isfinite(action_space.low)) and np.all(np.isfinite(action_space.high))):
            raise ConfigError(f"action_space: {cls.__name__} needs finite Box bounds, "
                              f"got low={action_space.low} high={action_space.high}")
        return shape

    def _squash(self, values: torch.Tensor) -> torch.Tensor:
        return self.center + self.half_range * torch.tanh(values)

    def _log_jacobian(self, pre_squash: torch.Tensor) -> torch.Tensor:
        # log |d squash / du| = log(half_range) + log(1 - tanh(u)^2), the latter in a stable form.
        log_one_minus_tanh_sq = 2.0 * (math.log(2.0) - pre_squash - F.softplus(-2.0 * pre_squash))
        return torch.log(self.half_range) + log_one_minus_tanh_sq

    def sample(self, generator: torch.Generator | None = None) -> torch.Tensor:
        return self._squash(super().sample(generator))

    def deterministic_sample(self) -> torch.Tensor:
        return self._squash(self.mean)

    def log_prob(self, actions: torch.Tensor) -> torch.Tensor:
        unit = ((actions.to(self.mean.dtype) - self.center) / self.half_range).clamp(-1.0 + self._EPSILON,
                                                                                   1.0 - self._EPSILON)
        pre_squash = torch.atanh(unit)
        per_entry = self._gaussian_log_prob(pre_squash) - self._log_jacobian(pre_squash)
        return sum_trailing(per_entry, self.event_dims)

    def entropy(self) -> torch.Tensor:
        per_entry = self._gaussian_entropy() + self._log_jacobian(self.mean)
        return sum_trailing(per_entry, self.event_dims)
