"""StructuredPolicy: maps observation dicts to action dicts, one actor at a time or as a batch."""

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any

from maze_engine.core.actor_id import ActorID


class StructuredPolicy(ABC):
    """A policy for StructuredEnvs: observations and actions are dicts keyed like the env's spaces."""

    @abstractmethod
    def compute_action(self, observation: dict[str, Any], actor_id: ActorID | None = None,
                       deterministic: bool = False) -> dict[str, Any]:
        """The action for ``observation`` of actor ``actor_id`` (``None``: the only actor)."""

    def compute_actions(self, observations: Sequence[dict[str, Any]], actor_id: ActorID | None = None,
                        deterministic: bool = False) -> list[dict[str, Any]]:
        """Actions for many observations of the same actor; batched policies override this with one forward
        pass."""
        return [self.compute_action(observation, actor_id, deterministic) for observation in observations]

    def seed(self, seed: int | None) -> None:
        """Seed the policy's randomness."""

    def reset(self) -> None:
        """Called at the start of each episode (for policies with per-episode state)."""
