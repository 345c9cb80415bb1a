"""Conversion interfaces between a CoreEnv's maze_state/maze_action and a policy's observation/action
spaces."""

from abc import ABC, abstractmethod
from typing import Any

from gymnasium import spaces


class ObservationConversionInterface(ABC):
    """Turns a maze_state into the observation the policy sees."""

    @abstractmethod
    def maze_to_space(self, maze_state: Any) -> dict[str, Any]:
        """Convert ``maze_state`` to an observation dict."""

    @abstractmethod
    def space(self) -> spaces.Dict:
        """The observation space (a Dict space)."""


class ActionConversionInterface(ABC):
    """Turns the policy's action into a maze_action the CoreEnv understands, and back."""

    @abstractmethod
    def space_to_maze(self, action: dict[str, Any], maze_state: Any) -> Any:
        """Convert a policy action dict to a maze_action."""

    @abstractmethod
    def maze_to_space(self, maze_action: Any) -> dict[str, Any]:
        """Convert a maze_action to a policy action dict (used for imitation data and replays)."""

    @abstractmethod
    def space(self) -> spaces.Dict:
        """The action space (a Dict space)."""
