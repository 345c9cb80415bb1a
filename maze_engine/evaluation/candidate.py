"""The policy being evaluated, seen as what off-policy evaluation needs of it: log-probabilities of actions.

A *candidate* is anything with ``log_probs(observations, actions) -> (steps,)``: the log-probability (or
log-density) of each action given its observation, both batched as dicts of arrays keyed like the policy's
spaces. ``candidate_of`` makes one of a ``TorchPolicy`` (its distribution mapper's log-probabilities, the
ones it samples from) or a ``RandomPolicy`` (uniform); any object with a ``log_probs`` method is used as
it is, so a caller can evaluate policies the engine does not build (an epsilon-soft version of one, say).
"""

from collections.abc import Mapping
from typing import Any, Protocol, runtime_checkable

import numpy as np
from gymnasium import spaces

from maze_engine.core.actor_id import ActorID
from maze_engine.core.errors import ConfigError, SpaceMismatchError

DEFAULT_BATCH = 8192
"""Steps per forward pass when a torch policy scores logged actions."""


@runtime_checkable
class Candidate(Protocol):
    """A policy as off-policy evaluation sees it."""

    def log_probs(self, observations: Mapping[str, Any], actions: Mapping[str, Any]) -> np.ndarray:
        """``(steps,)``: log-probability of ``actions[i]`` given ``observations[i]``; -inf where never."""


def _rows(tree: Mapping[str, Any], start: int, stop: int) -> dict[str, Any]:
    return {key: _rows(value, start, stop) if isinstance(value, Mapping) else value[start:stop]
            for key, value in tree.items()}


class TorchCandidate:
    """A ``TorchPolicy``'s log-probabilities, in batches of ``batch_size`` steps (no autograd).

    ``temperature`` divides the logits as in ``TorchPolicy.compute_actions``; ``actor_id`` picks the step's
    net for multi-step envs (None: the first step).
    """

    def __init__(self, policy: Any, actor_id: ActorID | None = None, batch_size: int = DEFAULT_BATCH,
                 temperature: float = 1.0) -> None:
        if batch_size < 1:
            raise ConfigError(f"batch_size: expected a positive integer, got {batch_size}")
        self.policy = policy
        self.actor_id = actor_id
        self.batch_size = batch_size
        self.temperature = temperature

    def log_probs(self, observations: Mapping[str, Any], actions: Mapping[str, Any]) -> np.ndarray:
        import torch

        steps = len(next(iter(observations.values())))
        self._check_observations(observations)
        out = np.empty(steps, dtype=np.float64)
        device = self.policy.device
        with torch.inference_mode():
            for start in range(0, steps, self.batch_size):
                stop = min(start + self.batch_size, steps)
                obs = {key: torch.as_tensor(np.asarray(value[start:stop], dtype=np.float32), device=device)
                       for key, value in observations.items()}
                acts = _tensors(_rows(actions, start, stop), device)
                distribution = self.policy.distribution(obs, self.actor_id, self.temperature)
                out[start:stop] = distribution.log_prob(acts).reshape(stop - start).double().cpu().numpy()
        return out

    def _check_observations(self, observations: Mapping[str, Any]) -> None:
        """The logged observations must be the policy's: the same keys and shapes."""
        known = self.policy.observation_spaces_dict or {}
        step = self.actor_id.step_key if self.actor_id is not None else next(iter(known), None)
        space = known.get(step) if step is not None else None
        if space is None:
            return
        expected = {key: sub.shape for key, sub in space.spaces.items()}
        got = {key: np.shape(value)[1:] for key, value in observations.items()}
        if set(got) != set(expected) or any(got[key] != shape for key, shape in expected.items()):
            raise SpaceMismatchError("observations", f"the policy's observation keys and shapes {expected}",
                                     f"{got} in the logged data (record with the env and wrappers the policy "
                                     "was trained with)")


def _tensors(tree: Mapping[str, Any], device: Any) -> dict[str, Any]:
    import torch

    result: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, Mapping):
            result[key] = _tensors(value, device)
            continue
        array = np.asarray(value)
        if array.dtype == np.float64:
            array = array.astype(np.float32)
        result[key] = torch.as_tensor(array, device=device)
    return result


class UniformCandidate:
    """The uniform policy over a (bounded) action space: a ``RandomPolicy``'s log-probabilities."""

    def __init__(self, action_space: spaces.Space) -> None:
        from maze_engine.policies.random_policy import uniform_log_prob

        log_prob = uniform_log_prob(action_space)
        if log_prob is None:
            raise ConfigError(f"action_space: a uniform policy has no log-probability over {action_space} "
                              "(an unbounded Box, or a space kind RandomPolicy samples otherwise)")
        self.log_prob = log_prob

    def log_probs(self, observations: Mapping[str, Any], actions: Mapping[str, Any]) -> np.ndarray:
        steps = len(next(iter(observations.values())))
        return np.full(steps, self.log_prob, dtype=np.float64)


def candidate_of(policy: Any, actor_id: ActorID | None = None) -> Candidate:
    """The candidate of ``policy``: a TorchPolicy, a RandomPolicy, or an object with ``log_probs``."""
    from maze_engine.policies.random_policy import RandomPolicy
    from maze_engine.policies.torch_policy import TorchPolicy

    if isinstance(policy, TorchPolicy):
        return TorchCandidate(policy, actor_id)
    if isinstance(policy, RandomPolicy):
        step = next(iter(policy.action_spaces_dict)) if actor_id is None else actor_id.step_key
        return UniformCandidate(policy.action_spaces_dict[step])
    if isinstance(policy, Candidate):
        return policy
    raise ConfigError(f"policy: expected a TorchPolicy, a RandomPolicy or an object with log_probs("
                      f"observations, actions), got {type(policy).__name__}")
