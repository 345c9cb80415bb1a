"""TimeLimitWrapper: ends episodes after a fixed number of steps, marking them as truncated."""

from typing import Any

from maze_engine.core.env.structured_env import EnvStep, StructuredEnv
from maze_engine.core.errors import ConfigError
from maze_engine.wrappers.wrapper import Wrapper


class TimeLimitWrapper(Wrapper[StructuredEnv]):
    """Reports ``done`` once ``max_episode_steps`` steps have been taken since the last reset.

    The step that hits the limit gets ``info["truncated"] = True``; ``info["terminated"]`` keeps what the
    env said, so an env that terminates by itself on that very step stays terminated (as in gymnasium).
    Steps taken past the limit without a reset keep reporting ``done`` and ``truncated``.

    >>> from maze_engine import GymMazeEnv
    >>> env = TimeLimitWrapper.wrap(GymMazeEnv("CartPole-v1"), max_episode_steps=2)
    >>> _ = env.reset()
    >>> env.step({"action": 0})[2], env.step({"action": 0})[2]
    (False, True)
    """

    def __init__(self, env: StructuredEnv, max_episode_steps: int) -> None:
        super().__init__(env)
        valid = isinstance(max_episode_steps, int) and not isinstance(max_episode_steps, bool)
        if not valid or max_episode_steps < 1:
            raise ConfigError(f"max_episode_steps: expected a positive integer, got {max_episode_steps!r}")
        self.max_episode_steps = max_episode_steps
        self.elapsed_steps = 0

    def step(self, action: dict[str, Any]) -> EnvStep:
        observation, reward, done, info = self.env.step(action)
        self.elapsed_steps += 1
        if self.elapsed_steps >= self.max_episode_steps:
            # A fresh dict: the env may hand out an info object it keeps using.
            info = dict(info)
            info.setdefault("terminated", bool(done))
            info["truncated"] = True
            done = True
        return observation, reward, done, info

    def reset(self) -> dict[str, Any]:
        self.elapsed_steps = 0
        return self.env.reset()
