"""Small deterministic envs whose observations reveal the step count, so tests can check exact values."""

from collections.abc import Callable
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
from gymnasium import spaces

from maze_engine import GymMazeEnv


class CounterEnv(gym.Env[Any, Any]):
    """Observation after ``t`` steps is ``[t, t + 10]`` (dict mode adds ``"count": t``); reward is the action.

    Terminates when ``terminate_at`` steps have been taken; never truncates by itself.
    """

    def __init__(self, terminate_at: int | None = None, dict_obs: bool = False) -> None:
        self.terminate_at = terminate_at
        self.dict_obs = dict_obs
        vector = spaces.Box(low=-100.0, high=100.0, shape=(2,), dtype=np.float32)
        self.observation_space: spaces.Space[Any] = (
            spaces.Dict({"vector": vector, "count": spaces.Discrete(101)}) if dict_obs else vector)
        self.action_space = spaces.Discrete(3)
        self.t = 0

    def _observation(self) -> Any:
        vector = np.array([self.t, self.t + 10], dtype=np.float32)
        return {"vector": vector, "count": self.t} if self.dict_obs else vector

    def reset(self, *, seed: int | None = None,
              options: dict[str, Any] | None = None) -> tuple[Any, dict[str, Any]]:
        super().reset(seed=seed)
        self.t = 0
        return self._observation(), {}

    def step(self, action: Any) -> tuple[Any, float, bool, bool, dict[str, Any]]:
        self.t += 1
        terminated = self.terminate_at is not None and self.t >= self.terminate_at
        return self._observation(), float(action), terminated, False, {}


@pytest.fixture
def counter_env() -> Callable[..., GymMazeEnv]:
    """Factory: ``counter_env(terminate_at=None, dict_obs=False)`` -> a GymMazeEnv around CounterEnv."""

    def make(terminate_at: int | None = None, dict_obs: bool = False) -> GymMazeEnv:
        return GymMazeEnv(CounterEnv(terminate_at=terminate_at, dict_obs=dict_obs))

    return make
