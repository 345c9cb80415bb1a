"""RandomPolicy: samples uniformly from the action space of the actor that acts."""

import copy
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from gymnasium import spaces

from maze_engine.core.actor_id import ActorID
from maze_engine.core.errors import ConfigError
from maze_engine.policies.policy import StructuredPolicy


class RandomPolicy(StructuredPolicy):
    """Samples actions at random; a baseline and a stand-in until a policy is trained.

    >>> from maze_engine import GymMazeEnv
    >>> policy = RandomPolicy(GymMazeEnv("CartPole-v1").action_spaces_dict, seed=0)
    >>> sorted(policy.compute_action({}))
    ['action']
    """

    def __init__(self, action_spaces_dict: dict[int | str, spaces.Dict], seed: int | None = None) -> None:
        if not action_spaces_dict:
            raise ConfigError("action_spaces_dict: expected at least one step's action space, "
                              "got an empty mapping")
        self.action_spaces_dict = action_spaces_dict
        # Sampling the sub-spaces directly skips gymnasium's Dict.sample overhead on the hot path.
        # Copies, so seeding the policy never touches the env's own spaces.
        self._sub_spaces = {key: tuple((name, copy.deepcopy(sub)) for name, sub in space.spaces.items())
                            for key, space in action_spaces_dict.items()}
        self._default_key = next(iter(action_spaces_dict))
        self._log_probs = {key: uniform_log_prob(space) for key, space in action_spaces_dict.items()}
        self.seed(seed)

    def seed(self, seed: int | None) -> None:
        seeds = np.random.SeedSequence(seed).generate_state(len(self._sub_spaces) * 8)
        index = 0
        for sub_spaces in self._sub_spaces.values():
            for _, space in sub_spaces:
                space.seed(int(seeds[index % len(seeds)]))
                index += 1

    reports_log_probs = True
    """``compute_actions`` fills ``log_probs_out`` (``act_batch`` asks for it when recording)."""

    def compute_action(self, observation: dict[str, Any], actor_id: ActorID | None = None,
                       deterministic: bool = False) -> dict[str, Any]:
        key = self._default_key if actor_id is None else actor_id.step_key
        return {name: space.sample() for name, space in self._sub_spaces[key]}

    def compute_actions(self, observations: Sequence[dict[str, Any]], actor_id: ActorID | None = None,
                        deterministic: bool = False, *,
                        log_probs_out: list[float | None] | None = None) -> list[dict[str, Any]]:
        """An action per observation; ``log_probs_out`` gets the uniform log-probability (log-density for a
        bounded float Box) of each, None where the space is sampled otherwise (unbounded Box)."""
        if log_probs_out is not None:
            key = self._default_key if actor_id is None else actor_id.step_key
            log_probs_out[:] = [self._log_probs[key]] * len(observations)
        return [self.compute_action(observation, actor_id, deterministic) for observation in observations]


def uniform_log_prob(space: spaces.Space) -> float | None:
    """Log-probability of any one sample of ``space`` under uniform sampling; None where gymnasium samples
    otherwise (a Box unbounded on a side) or the space kind is not one of the six."""
    if isinstance(space, spaces.Discrete):
        return -math.log(int(space.n))
    if isinstance(space, spaces.MultiDiscrete):
        return -float(np.log(space.nvec.astype(np.float64)).sum())
    if isinstance(space, spaces.MultiBinary):
        return -float(np.prod(space.shape)) * math.log(2.0)
    if isinstance(space, spaces.Box):
        if not space.is_bounded("both"):
            return None
        width = space.high.astype(np.float64) - space.low.astype(np.float64)
        if np.issubdtype(space.dtype, np.integer):  # integers low..high inclusive
            width = width + 1.0
        return -float(np.log(width).sum())
    if isinstance(space, spaces.Dict | spaces.Tuple):
        parts = [uniform_log_prob(sub) for sub in
                 (space.spaces.values() if isinstance(space, spaces.Dict) else space.spaces)]
        return None if any(part is None for part in parts) else float(sum(parts))  # type: ignore[arg-type]
    return None
