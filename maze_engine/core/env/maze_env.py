"""MazeEnv: a CoreEnv plus the conversions that turn it into a StructuredEnv."""

from typing import Any

from gymnasium import spaces

from maze_engine.core.actor_id import ActorID
from maze_engine.core.env.conversion import ActionConversionInterface, ObservationConversionInterface
from maze_engine.core.env.core_env import CoreEnv
from maze_engine.core.env.structured_env import EnvStep, StructuredEnv
from maze_engine.core.events import EventRecord


class MazeEnv(StructuredEnv):
    """Converts policy actions to maze_actions, steps the CoreEnv and converts maze_states to observations."""

    def __init__(self, core_env: CoreEnv,
                 action_conversion_dict: dict[int | str, ActionConversionInterface],
                 observation_conversion_dict: dict[int | str, ObservationConversionInterface]) -> None:
        self.core_env = core_env
        self.action_conversion_dict = action_conversion_dict
        self.observation_conversion_dict = observation_conversion_dict
        self._action_spaces = {key: conv.space() for key, conv in action_conversion_dict.items()}
        self._observation_spaces = {key: conv.space() for key, conv in observation_conversion_dict.items()}
        self.last_maze_state: Any = None
        self.last_maze_action: Any = None

    @property
    def action_spaces_dict(self) -> dict[int | str, spaces.Dict]:
        return self._action_spaces

    @property
    def observation_spaces_dict(self) -> dict[int | str, spaces.Dict]:
        return self._observation_spaces

    def actor_id(self) -> ActorID:
        return self.core_env.actor_id()

    def is_actor_done(self) -> bool:
        return self.core_env.is_actor_done()

    def step(self, action: dict[str, Any]) -> EnvStep:
        core_env = self.core_env
        maze_action = self.action_conversion_dict[core_env.actor_id().step_key].space_to_maze(
            action, self.last_maze_state)
        self.last_maze_action = maze_action
        maze_state, reward, done, info = core_env.step(maze_action)
        self.last_maze_state = maze_state
        # The actor after the step, which may differ from the one that acted.
        observation = self.observation_conversion_dict[core_env.actor_id().step_key].maze_to_space(maze_state)
        return observation, reward, done, info

    def reset(self) -> dict[str, Any]:
        maze_state = self.core_env.reset()
        self.last_maze_state = maze_state
        self.last_maze_action = None
        return self.observation_conversion_dict[self.core_env.actor_id().step_key].maze_to_space(maze_state)

    def get_step_events(self) -> list[EventRecord]:
        """Events the CoreEnv raised during the last step."""
        return self.core_env.get_step_events()

    def seed(self, seed: int | None) -> None:
        self.core_env.seed(seed)

    def close(self) -> None:
        self.core_env.close()

    def render(self) -> Any:
        """Render the CoreEnv's current state."""
        return self.core_env.render()

    @property
    def maze_env(self) -> "MazeEnv":
        """The MazeEnv at the bottom of a wrapper stack (here: itself)."""
        return self
