"""Independent categorical distributions for MultiDiscrete action spaces."""

import numpy as np
import torch
import torch.nn.functional as F
from gymnasium import spaces

from maze_engine.perception.distributions.base import ProbabilityDistribution, expect_space
from maze_engine.perception.distributions.categorical import categorical_entropy, gumbel_max_sample


class MultiCategoricalProbabilityDistribution(ProbabilityDistribution):
    """One categorical per entry of a MultiDiscrete space.

    Logits have shape ``[..., sum(nvec)]``: the logits of each entry one after another (in row-major order of
    ``nvec``). Actions have shape ``[..., *nvec.shape]`` and hold the space's values (``start`` included).
    """

    def __init__(self, logits: torch.Tensor, action_space: spaces.Space, temperature: float = 1.0) -> None:
        super().__init__(logits, action_space, temperature)
        assert isinstance(action_space, spaces.MultiDiscrete)
        self.nvec_shape = tuple(action_space.nvec.shape)
        self.sizes = [int(n) for n in action_space.nvec.reshape(-1)]
        self.start = torch.as_tensor(np.asarray(action_space.start).reshape(-1), dtype=torch.long,
                                     device=logits.device)
        scaled = logits if temperature == 1.0 else logits / temperature
        self.log_probs = [F.log_softmax(part, dim=-1) for part in torch.split(scaled, self.sizes, dim=-1)]

    @classmethod
    def required_logits_shape(cls, action_space: spaces.Space) -> tuple[int, ...]:
        expect_space(cls, action_space, spaces.MultiDiscrete)
        assert isinstance(action_space, spaces.MultiDiscrete)
        return (int(action_space.nvec.sum()),)

    def _to_action(self, indices: list[torch.Tensor]) -> torch.Tensor:
        flat = torch.stack(indices, dim=-1) + self.start
        return flat.reshape(flat.shape[:-1] + self.nvec_shape)

    def sample(self, generator: torch.Generator | None = None) -> torch.Tensor:
        return self._to_action([gumbel_max_sample(log_probs, generator) for log_probs in self.log_probs])

    def deterministic_sample(self) -> torch.Tensor:
        return self._to_action([torch.argmax(log_probs, dim=-1) for log_probs in self.log_probs])

    def log_prob(self, actions: torch.Tensor) -> torch.Tensor:
        batch_shape = actions.shape[:actions.dim() - len(self.nvec_shape)]
        flat = actions.long().reshape(batch_shape + (-1,)) - self.start
        per_entry = [torch.gather(log_probs, -1, flat[..., i:i + 1]).squeeze(-1)
                     for i, log_probs in enumerate(self.log_probs)]
        return torch.stack(per_entry, dim=-1).sum(dim=-1)

    def entropy(self) -> torch.Tensor:
        entropies = [categorical_entropy(log_probs) for log_probs in self.log_probs]
        return torch.stack(entropies, dim=-1).sum(dim=-1)
