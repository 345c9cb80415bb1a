"""GymMazeEnv: any gymnasium env behind the Maze env hierarchy.

The maze_state is the raw gymnasium observation and the maze_action the raw gymnasium action, so an external
gymnasium env can drive an AgentDeployment directly. Non-dict spaces appear to the policy under the keys
``observation`` and ``action``.
"""

from typing import Any

import gymnasium as gym
from gymnasium import spaces

from maze_engine.core.env.conversion import ActionConversionInterface, ObservationConversionInterface
from maze_engine.core.env.core_env import CoreEnv, StepResult
from maze_engine.core.env.maze_env import MazeEnv
from maze_engine.core.errors import ConfigError


class GymCoreEnv(CoreEnv):
    """Steps a gymnasium env; ``done`` is terminated or truncated, both kept in info."""

    def __init__(self, env: gym.Env) -> None:
        self.env = env
        self._next_seed: int | None = None

    def step(self, maze_action: Any) -> StepResult:
        observation, reward, terminated, truncated, info = self.env.step(maze_action)
        info["terminated"] = terminated
        info["truncated"] = truncated
        return observation, float(reward), terminated or truncated, info

    def reset(self) -> Any:
        seed, self._next_seed = self._next_seed, None
        observation, _ = self.env.reset(seed=seed)
        return observation

    @property
    def maze_state_space(self) -> spaces.Space:
        """The maze_state is the raw gymnasium observation, so its space is the env's observation space."""
        return self.env.observation_space

    def seed(self, seed: int | None) -> None:
        self._next_seed = seed
        self.env.action_space.seed(seed)

    def close(self) -> None:
        self.env.close()

    def render(self) -> Any:
        return self.env.render()


class GymObservationConversion(ObservationConversionInterface):
    """Gymnasium observation -> ``{"observation": obs}`` (dict observations pass through)."""

    def __init__(self, observation_space: spaces.Space) -> None:
        self._is_dict = isinstance(observation_space, spaces.Dict)
        self._space = observation_space if self._is_dict else spaces.Dict({"observation": observation_space})

    def maze_to_space(self, maze_state: Any) -> dict[str, Any]:
        return maze_state if self._is_dict else {"observation": maze_state}

    def space(self) -> spaces.Dict:
        return self._space  # type: ignore[return-value]


class GymActionConversion(ActionConversionInterface):
    """``{"action": a}`` -> gymnasium action ``a`` (dict actions pass through)."""

    def __init__(self, action_space: spaces.Space) -> None:
        self._is_dict = isinstance(action_space, spaces.Dict)
        self._space = action_space if self._is_dict else spaces.Dict({"action": action_space})

    def space_to_maze(self, action: dict[str, Any], maze_state: Any) -> Any:
        return action if self._is_dict else action["action"]

    def maze_to_space(self, maze_action: Any) -> dict[str, Any]:
        return maze_action if self._is_dict else {"action": maze_action}

    def space(self) -> spaces.Dict:
        return self._space  # type: ignore[return-value]


class GymMazeEnv(MazeEnv):
    """A gymnasium env (instance or registered id) as a MazeEnv.

    >>> env = GymMazeEnv("CartPole-v1")
    >>> sorted(env.observation_space.spaces)
    ['observation']
    """

    def __init__(self, env: gym.Env | str | None = None, name: str | None = None, **make_kwargs: Any) -> None:
        env = env if env is not None else name
        if isinstance(env, str):
            try:
                env = gym.make(env, **make_kwargs)
            except gym.error.Error as err:
                raise ConfigError(f"env.name: {env!r} is not a registered gymnasium env ({err})") from err
        if not isinstance(env, gym.Env):
            raise ConfigError(f"env: expected a gymnasium env or its registered id, got {type(env).__name__}")
        self.gym_env = env
        super().__init__(core_env=GymCoreEnv(env),
                         action_conversion_dict={0: GymActionConversion(env.action_space)},
                         observation_conversion_dict={0: GymObservationConversion(env.observation_space)})


def make_gym_maze_env(name: str, **make_kwargs: Any) -> GymMazeEnv:
    """Config entry point: ``{_target_: maze_engine.make_gym_maze_env, name: CartPole-v1}``."""
    return GymMazeEnv(name, **make_kwargs)
