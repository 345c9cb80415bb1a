"""CoreEnv: the simulation itself, speaking maze_state and maze_action rather than policy spaces."""

from abc import ABC, abstractmethod
from typing import Any

from maze_engine.core.actor_id import DEFAULT_ACTOR_ID, ActorID
from maze_engine.core.events import EventRecord

StepResult = tuple[Any, float, bool, dict[str, Any]]


class CoreEnv(ABC):
    """Holds the simulation; MazeEnv converts its maze_state/maze_action to and from the policy's spaces."""

    @abstractmethod
    def step(self, maze_action: Any) -> StepResult:
        """Advance the simulation by ``maze_action``; returns ``(maze_state, reward, done, info)``."""

    @abstractmethod
    def reset(self) -> Any:
        """Start a new episode and return its first maze_state."""

    @property
    def maze_state_space(self) -> Any:
        """The gymnasium space of maze_states where known (else None); used to check states from outside."""
        return None

    def seed(self, seed: int | None) -> None:
        """Seed the simulation's randomness."""

    def close(self) -> None:
        """Release resources."""

    def actor_id(self) -> ActorID:
        """The actor that acts next (single-step, single-agent envs always return ``ActorID(0, 0)``)."""
        return DEFAULT_ACTOR_ID

    def is_actor_done(self) -> bool:
        """Whether the current actor has finished (for envs where agents leave before the episode ends)."""
        return False

    def get_step_events(self) -> list[EventRecord]:
        """Events raised during the last step, for statistics and event logs."""
        return []

    def render(self) -> Any:
        """Render the current state; returns text or an RGB array where the simulation supports it."""
        return None
