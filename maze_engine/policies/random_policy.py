"""RandomPolicy: samples uniformly from the action space of the actor that acts."""

import copy
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
        self.seed(seed)

    def seed(self, seed: int | None) -> None:
        seeds = np.random.SeedSequence(seed).generate_state(len(self._sub_spaces) * 8)
        index = 0
        for sub_spaces in self._sub_spaces.values():
            for _, space in sub_spaces:
                space.seed(int(seeds[index % len(seeds)]))
                index += 1

    def compute_action(self, observation: dict[str, Any], actor_id: ActorID | None = None,
                       deterministic: bool = False) -> dict[str, Any]:
        key = self._default_key if actor_id is None else actor_id.step_key
        return {name: space.sample() for name, space in self._sub_spaces[key]}
