"""Envs and policies for rollout tests; importable in worker processes (see conftest.py)."""

import multiprocessing
import os
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from maze_engine import ActorID, ConfigError, EventRecord, GymCoreEnv, GymMazeEnv, RandomPolicy


class EndlessEnv(gym.Env[Any, Any]):
    """Never ends by itself; the reward is the action (0, 1 or 2), the observation the step count.

    ``render_mode``: ``rgb_array`` renders a 4x6 image whose red channel is the step count, ``ansi`` a line
    of text; anything else renders nothing.
    """

    metadata = {"render_modes": ["rgb_array", "ansi"]}

    def __init__(self, render_mode: str | None = None) -> None:
        self.render_mode = render_mode
        self.observation_space = spaces.Box(low=0.0, high=1e6, shape=(1,), dtype=np.float32)
        self.action_space = spaces.Discrete(3)
        self.t = 0

    def reset(self, *, seed: int | None = None,
              options: dict[str, Any] | None = None) -> tuple[Any, dict[str, Any]]:
        super().reset(seed=seed)
        self.t = 0
        return np.array([0.0], dtype=np.float32), {}

    def step(self, action: Any) -> tuple[Any, float, bool, bool, dict[str, Any]]:
        self.t += 1
        return np.array([self.t], dtype=np.float32), float(action), False, False, {}

    def render(self) -> Any:
        if self.render_mode == "rgb_array":
            frame = np.zeros((4, 6, 3), dtype=np.uint8)
            frame[..., 0] = self.t % 256
            return frame
        if self.render_mode == "ansi":
            return f"t={self.t}"
        return None


def make_endless_env(render_mode: str | None = None) -> GymMazeEnv:
    """Config entry point: ``{_target_: rollout_helpers.make_endless_env}``."""
    return GymMazeEnv(EndlessEnv(render_mode=render_mode))


class EventfulCoreEnv(GymCoreEnv):
    """Raises one ``action_taken`` event per step, with the action and the reward."""

    def __init__(self, env: gym.Env[Any, Any]) -> None:
        super().__init__(env)
        self._events: list[EventRecord] = []

    def step(self, maze_action: Any) -> tuple[Any, float, bool, dict[str, Any]]:
        result = super().step(maze_action)
        self._events = [EventRecord("action_taken", {"action": int(maze_action), "reward": result[1]})]
        return result

    def get_step_events(self) -> list[EventRecord]:
        return self._events


def make_eventful_env() -> GymMazeEnv:
    """An EndlessEnv whose core env raises an event on every step."""
    env = GymMazeEnv(EndlessEnv())
    env.core_env = EventfulCoreEnv(env.gym_env)
    return env


def _in_worker() -> bool:
    return multiprocessing.parent_process() is not None


class CrashingPolicy(RandomPolicy):
    """Kills its process (as a segfault or the OOM killer would) on the first action, in workers only."""

    def compute_action(self, observation: dict[str, Any], actor_id: ActorID | None = None,
                       deterministic: bool = False) -> dict[str, Any]:
        if _in_worker():
            os._exit(3)
        return super().compute_action(observation, actor_id, deterministic)


class RaisingPolicy(RandomPolicy):
    """Raises on the first action in workers: a ValueError (``error="value"``) or a ConfigError."""

    def __init__(self, action_spaces_dict: Any, error: str = "value", seed: int | None = None) -> None:
        super().__init__(action_spaces_dict, seed=seed)
        self.error = error

    def compute_action(self, observation: dict[str, Any], actor_id: ActorID | None = None,
                       deterministic: bool = False) -> dict[str, Any]:
        if _in_worker():
            if self.error == "config":
                raise ConfigError("policy.threshold: expected a number, got 'x'")
            raise ValueError("policy exploded")
        return super().compute_action(observation, actor_id, deterministic)
