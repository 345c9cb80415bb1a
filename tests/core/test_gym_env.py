"""GymMazeEnv: every observation space kind, terminated vs truncated, seeding, conversions and errors."""

from typing import Any

import gymnasium as gym
import numpy as np
import pytest
from gymnasium import spaces

from maze_engine import ActorID, ConfigError, GymMazeEnv, RandomPolicy, make_gym_maze_env


class TinyEnv(gym.Env[Any, Any]):
    """Observations drawn from ``observation_space``; terminates after ``length`` steps, or truncates."""

    def __init__(self, observation_space: spaces.Space[Any], action_space: spaces.Space[Any] | None = None,
                 length: int = 3, truncate: bool = False) -> None:
        self.observation_space = observation_space
        self.action_space = action_space or spaces.Discrete(2)
        self.length, self.truncate = length, truncate
        self.t = 0
        self.actions: list[Any] = []

    def reset(self, *, seed: int | None = None,
              options: dict[str, Any] | None = None) -> tuple[Any, dict[str, Any]]:
        super().reset(seed=seed)
        self.observation_space.seed(seed)
        self.t = 0
        return self.observation_space.sample(), {"reset": True}

    def step(self, action: Any) -> tuple[Any, float, bool, bool, dict[str, Any]]:
        self.actions.append(action)
        self.t += 1
        ended = self.t >= self.length
        return (self.observation_space.sample(), 0.5, ended and not self.truncate, ended and self.truncate,
                {"t": self.t})


OBSERVATION_SPACES = {
    "discrete": spaces.Discrete(5),
    "box": spaces.Box(-1, 1, (3,), np.float32),
    "multi_discrete": spaces.MultiDiscrete([2, 4]),
    "multi_binary": spaces.MultiBinary(4),
    "tuple": spaces.Tuple([spaces.Discrete(2), spaces.Box(0, 1, (2,))]),
}


@pytest.mark.parametrize("name", sorted(OBSERVATION_SPACES))
def test_non_dict_observations_appear_under_observation(name):
    space = OBSERVATION_SPACES[name]
    env = GymMazeEnv(TinyEnv(space))
    assert env.observation_spaces_dict == {0: spaces.Dict({"observation": space})}
    observation = env.reset()
    assert list(observation) == ["observation"]
    assert env.observation_space.contains(observation)
    assert env.last_maze_state is observation["observation"]
    observation, reward, done, info = env.step({"action": 1})
    assert env.observation_space.contains(observation) and reward == 0.5 and not done
    assert info["t"] == 1 and info["terminated"] is False and info["truncated"] is False


def test_dict_observations_pass_through_unchanged():
    space = spaces.Dict({"position": spaces.Box(-1, 1, (2,)), "flags": spaces.MultiBinary(3)})
    env = GymMazeEnv(TinyEnv(space))
    assert env.observation_space is space
    observation = env.reset()
    assert sorted(observation) == ["flags", "position"] and space.contains(observation)


def test_dict_actions_pass_through_unchanged():
    action_space = spaces.Dict({"move": spaces.Discrete(3), "force": spaces.Box(0, 1, (1,))})
    gym_env = TinyEnv(spaces.Discrete(2), action_space=action_space)
    env = GymMazeEnv(gym_env)
    assert env.action_space is action_space
    env.reset()
    action = {"move": 2, "force": np.array([0.5], dtype=np.float32)}
    env.step(action)
    assert gym_env.actions == [action] and env.last_maze_action is action


def test_frozen_lake_discrete_states():
    env = GymMazeEnv("FrozenLake-v1", is_slippery=False)
    assert env.observation_space["observation"] == spaces.Discrete(16)
    assert env.action_space["action"] == spaces.Discrete(4)
    env.seed(0)
    assert int(env.reset()["observation"]) == 0
    observation, _, _, _ = env.step({"action": 2})  # right
    assert int(observation["observation"]) == 1
    assert env.last_maze_action == 2


def test_cartpole_box_states_and_raw_maze_actions():
    env = GymMazeEnv(env="CartPole-v1")
    assert env.observation_space["observation"].shape == (4,)
    env.seed(3)
    first = env.reset()["observation"]
    env.seed(3)
    np.testing.assert_array_equal(env.reset()["observation"], first)
    env.step({"action": np.int64(1)})
    assert env.last_maze_action == 1


@pytest.mark.parametrize(("truncate", "terminated", "truncated"), [(False, True, False), (True, False, True)])
def test_terminated_and_truncated_are_kept_in_info(truncate, terminated, truncated):
    env = GymMazeEnv(TinyEnv(spaces.Discrete(2), length=2, truncate=truncate))
    env.reset()
    assert env.step({"action": 0})[2] is False
    _, _, done, info = env.step({"action": 0})
    assert done is True
    assert (info["terminated"], info["truncated"]) == (terminated, truncated)


def test_gymnasium_time_limit_counts_as_truncation():
    env = GymMazeEnv("CartPole-v1", max_episode_steps=3)
    env.reset()
    infos = [env.step({"action": step % 2})[3] for step in range(3)]
    assert infos[-1]["truncated"] is True and infos[-1]["terminated"] is False


def test_seeded_rollouts_repeat():
    def rollout() -> list[float]:
        env = GymMazeEnv("CartPole-v1")
        policy = RandomPolicy(env.action_spaces_dict, seed=7)
        env.seed(7)
        observation, done, values = env.reset(), False, []
        while not done:
            observation, _, done, _ = env.step(policy.compute_action(observation))
            values.append(float(observation["observation"][0]))
        return values

    assert rollout() == rollout()


def test_single_actor_interface():
    env = make_gym_maze_env("CartPole-v1")
    assert isinstance(env, GymMazeEnv)
    assert env.actor_id() == ActorID(0, 0) and env.agent_counts_dict == {0: 1}
    assert env.is_actor_done() is False and env.maze_env is env
    assert env.get_step_events() == []


def test_render_passes_through():
    env = GymMazeEnv("FrozenLake-v1", render_mode="ansi")  # text: needs no display or pygame
    env.reset()
    assert "F" in env.render()
    env.close()


@pytest.mark.parametrize(("env", "message"), [("NoSuchEnv-v0", "env.name"),
                                              (42, "env: expected a gymnasium env")])
def test_bad_envs_raise_config_errors(env, message):
    with pytest.raises(ConfigError, match=message):
        GymMazeEnv(env)
