"""TimeLimitWrapper: done after the limit, truncated vs terminated, counting restarts on reset."""

import pytest

from maze_engine import ConfigError, GymMazeEnv, TimeLimitWrapper, instantiate


@pytest.mark.parametrize("limit", [1, 3, 7])
def test_done_exactly_at_limit(counter_env, limit):
    env = TimeLimitWrapper.wrap(counter_env(), max_episode_steps=limit)
    env.reset()
    flags = [env.step({"action": 0}) for _ in range(limit)]
    assert [done for _, _, done, _ in flags] == [False] * (limit - 1) + [True]
    last_info = flags[-1][3]
    assert last_info["truncated"] is True
    assert last_info["terminated"] is False
    assert all(info["truncated"] is False for _, _, _, info in flags[:-1])


def test_env_termination_before_limit_is_not_truncated(counter_env):
    env = TimeLimitWrapper.wrap(counter_env(terminate_at=2), max_episode_steps=5)
    env.reset()
    env.step({"action": 0})
    _, _, done, info = env.step({"action": 0})
    assert done and info["terminated"] is True and info["truncated"] is False


def test_termination_on_the_limit_step_keeps_terminated(counter_env):
    env = TimeLimitWrapper.wrap(counter_env(terminate_at=3), max_episode_steps=3)
    env.reset()
    for _ in range(2):
        env.step({"action": 0})
    _, _, done, info = env.step({"action": 0})
    assert done and info["terminated"] is True and info["truncated"] is True


def test_reset_restarts_the_count(counter_env):
    env = TimeLimitWrapper.wrap(counter_env(), max_episode_steps=2)
    env.reset()
    env.step({"action": 0})
    env.reset()
    assert env.elapsed_steps == 0
    assert env.step({"action": 0})[2] is False
    assert env.step({"action": 0})[2] is True


def test_steps_past_the_limit_stay_done(counter_env):
    env = TimeLimitWrapper.wrap(counter_env(), max_episode_steps=1)
    env.reset()
    env.step({"action": 0})
    _, _, done, info = env.step({"action": 0})
    assert done and info["truncated"]


def test_observation_and_reward_pass_through(counter_env):
    env = TimeLimitWrapper.wrap(counter_env(), max_episode_steps=10)
    env.reset()
    observation, reward, _, _ = env.step({"action": 2})
    assert observation["observation"].tolist() == [1.0, 11.0]
    assert reward == 2.0
    assert env.observation_spaces_dict == env.env.observation_spaces_dict


def test_overrides_gymnasium_time_limit():
    # CartPole's own limit is 500; the wrapper ends the episode much earlier.
    env = TimeLimitWrapper.wrap(GymMazeEnv("CartPole-v1"), max_episode_steps=4)
    env.seed(0)
    env.reset()
    steps = 0
    done = False
    while not done:
        _, _, done, info = env.step({"action": steps % 2})
        steps += 1
    assert steps == 4 and info["truncated"]


def test_instantiate_from_config(counter_env):
    config = {"_target_": "maze_engine.TimeLimitWrapper", "max_episode_steps": 10}
    env = instantiate(config, env=counter_env())
    assert isinstance(env, TimeLimitWrapper) and env.max_episode_steps == 10
    env = instantiate({"_target_": "maze.core.wrappers.time_limit_wrapper.TimeLimitWrapper",
                       "max_episode_steps": 3}, env=counter_env())
    assert isinstance(env, TimeLimitWrapper)


@pytest.mark.parametrize("bad", [0, -1, 2.5, True, "10", None])
def test_invalid_limit_names_the_field(counter_env, bad):
    with pytest.raises(ConfigError, match="max_episode_steps"):
        TimeLimitWrapper(counter_env(), max_episode_steps=bad)
