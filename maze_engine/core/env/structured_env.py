"""StructuredEnv: the interface policies, runners and trainers use (multi-step, multi-agent capable)."""

from abc import ABC, abstractmethod
from typing import Any

from gymnasium import spaces

from maze_engine.core.actor_id import ActorID

EnvStep = tuple[dict[str, Any], float, bool, dict[str, Any]]


class StructuredEnv(ABC):
    """An env whose observations and actions are dicts, with one space pair per step key."""

    @abstractmethod
    def step(self, action: dict[str, Any]) -> EnvStep:
        """Apply ``action``; returns ``(observation, reward, done, info)``.

        ``info["truncated"]`` is True when the episode ended by a time limit rather than by the env itself
        (gymnasium's truncated), so ``done`` alone never loses that distinction.
        """

    @abstractmethod
    def reset(self) -> dict[str, Any]:
        """Start a new episode and return its first observation."""

    @abstractmethod
    def actor_id(self) -> ActorID:
        """The actor that acts on the next step."""

    @property
    @abstractmethod
    def action_spaces_dict(self) -> dict[int | str, spaces.Dict]:
        """Action space per step key."""

    @property
    @abstractmethod
    def observation_spaces_dict(self) -> dict[int | str, spaces.Dict]:
        """Observation space per step key."""

    @property
    def agent_counts_dict(self) -> dict[int | str, int]:
        """Number of agents per step key."""
        return {step_key: 1 for step_key in self.action_spaces_dict}

    @property
    def action_space(self) -> spaces.Dict:
        """Action space of the actor that acts next."""
        return self.action_spaces_dict[self.actor_id().step_key]

    @property
    def observation_space(self) -> spaces.Dict:
        """Observation space of the actor that acts next."""
        return self.observation_spaces_dict[self.actor_id().step_key]

    def is_actor_done(self) -> bool:
        """Whether the actor that just acted has finished."""
        return False

    def seed(self, seed: int | None) -> None:
        """Seed the env's randomness."""

    def close(self) -> None:
        """Release resources."""
