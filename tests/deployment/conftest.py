"""Shared helpers for deployment tests: an external CartPole driver, a spy wrapper and counting policies."""

from collections.abc import Sequence
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import gymnasium as gym
import numpy as np
import pytest

from maze_engine import ActorID, AgentDeployment, StructuredPolicy, Wrapper

CARTPOLE = "CartPole-v1"


@dataclass
class Episode:
    """What an external env saw while driving a deployment for one episode."""

    actions: list[Any] = field(default_factory=list)
    rewards: list[float] = field(default_factory=list)


def drive_episode(deployment: AgentDeployment, seed: int, external: gym.Env | None = None,
                  max_steps: int | None = None) -> Episode:
    """Seed 000's loop: an external gymnasium CartPole queries the deployment until done, then closes it."""
    external = external if external is not None else gym.make(CARTPOLE)
    state, info = external.reset(seed=seed)
    reward: float | None = None
    done = False
    episode = Episode()
    while not done and (max_steps is None or len(episode.actions) < max_steps):
        action = deployment.act(state, reward, done, info)
        episode.actions.append(action)
        state, step_reward, terminated, truncated, info = external.step(action)
        reward = float(step_reward)
        episode.rewards.append(reward)
        done = terminated or truncated
        if truncated:
            info = {**info, "truncated": True}
    deployment.close(state, reward, done, info)
    return episode


class SpyWrapper(Wrapper[Any]):
    """Records the calls the stack receives, to check when deployments reset and step their stacks."""

    def __init__(self, env: Any) -> None:
        super().__init__(env)
        self.calls: list[str] = []

    def reset(self) -> dict[str, Any]:
        self.calls.append("reset")
        return self.env.reset()

    def step(self, action: dict[str, Any]) -> Any:
        self.calls.append("step")
        return self.env.step(action)


class FailingWrapper(Wrapper[Any]):
    """Raises on the step whose number is ``fail_at`` (counted from 1 over the wrapper's lifetime)."""

    def __init__(self, env: Any, fail_at: int = 1) -> None:
        super().__init__(env)
        self.fail_at = fail_at
        self.steps = 0

    def step(self, action: dict[str, Any]) -> Any:
        self.steps += 1
        if self.steps == self.fail_at:
            raise KeyError("wrapper failure")
        return self.env.step(action)


class PolePolicy(StructuredPolicy):
    """Deterministic: push the cart towards the side the pole leans to. Counts its calls."""

    def __init__(self) -> None:
        self.single_calls = 0
        self.batch_calls: list[int] = []

    def compute_action(self, observation: dict[str, Any], actor_id: ActorID | None = None,
                       deterministic: bool = False) -> dict[str, Any]:
        self.single_calls += 1
        return {"action": np.int64(1 if observation["observation"][2] > 0 else 0)}

    def compute_actions(self, observations: Sequence[dict[str, Any]], actor_id: ActorID | None = None,
                        deterministic: bool = False) -> list[dict[str, Any]]:
        self.batch_calls.append(len(observations))
        angles = np.stack([observation["observation"] for observation in observations])[:, 2]
        return [{"action": np.int64(1 if angle > 0 else 0)} for angle in angles]


@pytest.fixture
def kit() -> SimpleNamespace:
    """The helpers above, for test modules (importlib import mode keeps conftest out of ``import``)."""
    return SimpleNamespace(CARTPOLE=CARTPOLE, drive_episode=drive_episode, Episode=Episode,
                           SpyWrapper=SpyWrapper, FailingWrapper=FailingWrapper, PolePolicy=PolePolicy)
