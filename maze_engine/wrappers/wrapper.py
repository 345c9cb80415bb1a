"""Wrapper base classes: delegate everything to the wrapped env and override one hook."""

from collections.abc import Iterator
from typing import Any, Generic, Self, TypeVar

from gymnasium import spaces

from maze_engine.core.actor_id import ActorID
from maze_engine.core.env.maze_env import MazeEnv
from maze_engine.core.env.structured_env import EnvStep, StructuredEnv

EnvType = TypeVar("EnvType", bound=StructuredEnv)


class Wrapper(StructuredEnv, Generic[EnvType]):
    """Passes every call through to ``env``; attributes not defined here are looked up on ``env``.

    >>> from maze_engine import GymMazeEnv
    >>> env = Wrapper.wrap(GymMazeEnv("CartPole-v1"))
    >>> env.reset()["observation"].shape
    (4,)
    """

    def __init__(self, env: EnvType) -> None:
        self.env = env

    @classmethod
    def wrap(cls, env: EnvType, **kwargs: Any) -> Self:
        """Wrap ``env`` in this wrapper; ``kwargs`` are the wrapper's constructor arguments."""
        return cls(env, **kwargs)

    def __getattr__(self, name: str) -> Any:
        # Guard against recursion while unpickling, when ``env`` is not yet set.
        if name == "env" or name.startswith("__"):
            raise AttributeError(name)
        return getattr(self.env, name)

    def step(self, action: dict[str, Any]) -> EnvStep:
        return self.env.step(action)

    def reset(self) -> dict[str, Any]:
        return self.env.reset()

    def actor_id(self) -> ActorID:
        return self.env.actor_id()

    def is_actor_done(self) -> bool:
        return self.env.is_actor_done()

    @property
    def action_spaces_dict(self) -> dict[int | str, spaces.Dict]:
        return self.env.action_spaces_dict

    @property
    def observation_spaces_dict(self) -> dict[int | str, spaces.Dict]:
        return self.env.observation_spaces_dict

    @property
    def agent_counts_dict(self) -> dict[int | str, int]:
        return self.env.agent_counts_dict

    @property
    def maze_env(self) -> MazeEnv:
        """The MazeEnv at the bottom of the stack."""
        return self.env.maze_env  # type: ignore[attr-defined]

    def seed(self, seed: int | None) -> None:
        self.env.seed(seed)

    def close(self) -> None:
        self.env.close()

    def wrapper_stack(self) -> Iterator["Wrapper[Any]"]:
        """This wrapper and every wrapper below it, outermost first."""
        env: Any = self
        while isinstance(env, Wrapper):
            yield env
            env = env.env

    def find_wrapper(self, wrapper_type: type["W"]) -> "W | None":
        """The outermost wrapper of ``wrapper_type`` in the stack, or None."""
        for wrapper in self.wrapper_stack():
            if isinstance(wrapper, wrapper_type):
                return wrapper
        return None


W = TypeVar("W", bound=Wrapper[Any])


class ObservationWrapper(Wrapper[EnvType]):
    """Changes observations: override ``observation`` (and ``observation_spaces_dict`` if the space
    changes)."""

    def observation(self, observation: dict[str, Any]) -> dict[str, Any]:
        raise NotImplementedError

    def step(self, action: dict[str, Any]) -> EnvStep:
        observation, reward, done, info = self.env.step(action)
        return self.observation(observation), reward, done, info

    def reset(self) -> dict[str, Any]:
        return self.observation(self.env.reset())


class ActionWrapper(Wrapper[EnvType]):
    """Changes actions on their way down: override ``action`` (and ``action_spaces_dict`` if the space
    changes)."""

    def action(self, action: dict[str, Any]) -> dict[str, Any]:
        raise NotImplementedError

    def step(self, action: dict[str, Any]) -> EnvStep:
        return self.env.step(self.action(action))


class RewardWrapper(Wrapper[EnvType]):
    """Changes rewards: override ``reward``."""

    def reward(self, reward: float) -> float:
        raise NotImplementedError

    def step(self, action: dict[str, Any]) -> EnvStep:
        observation, reward, done, info = self.env.step(action)
        return observation, self.reward(reward), done, info


def find_wrapper(env: StructuredEnv, wrapper_type: type[W]) -> W | None:
    """The outermost wrapper of ``wrapper_type`` around ``env`` (``env`` itself included), or None."""
    return env.find_wrapper(wrapper_type) if isinstance(env, Wrapper) else None
