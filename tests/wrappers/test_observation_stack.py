"""ObservationStackWrapper: stacked values over several steps, delta stacks, spaces, reset, config errors."""

import numpy as np
import pytest

from maze_engine import ConfigError, ObservationStackWrapper, instantiate


def _wrap(env, **entry):
    return ObservationStackWrapper.wrap(env, stack_config=[{"observation": "observation", **entry}])


def _run(env, steps):
    observation = env.reset()
    for _ in range(steps):
        observation = env.step({"action": 0})[0]
    return observation


@pytest.mark.parametrize(("steps", "expected"), [
    (0, [[0, 0], [0, 0], [0, 10]]),
    (1, [[0, 0], [0, 10], [1, 11]]),
    (2, [[0, 10], [1, 11], [2, 12]]),
    (5, [[3, 13], [4, 14], [5, 15]]),
])
def test_stack_holds_last_values_oldest_first(counter_env, steps, expected):
    env = _wrap(counter_env(), stack_steps=3)
    observation = _run(env, steps)
    assert sorted(observation) == ["observation"]
    assert observation["observation"].dtype == np.float32
    assert observation["observation"].tolist() == expected


@pytest.mark.parametrize(("steps", "expected"), [
    (0, [[0, 0], [0, 0], [0, 10]]),
    (1, [[0, 0], [1, 1], [1, 11]]),
    (4, [[1, 1], [1, 1], [4, 14]]),
])
def test_delta_stack_holds_consecutive_differences(counter_env, steps, expected):
    env = _wrap(counter_env(), stack_steps=3, delta=True)
    assert _run(env, steps)["observation"].tolist() == expected


def test_tag_and_keep_original(counter_env):
    env = _wrap(counter_env(), stack_steps=2, tag="stacked", keep_original=True)
    observation = _run(env, 3)
    assert sorted(observation) == ["observation", "observation-stacked"]
    assert observation["observation"].tolist() == [3, 13]
    assert observation["observation-stacked"].tolist() == [[2, 12], [3, 13]]


def test_tag_without_keep_original_drops_the_original(counter_env):
    env = _wrap(counter_env(), stack_steps=2, tag="stacked")
    assert sorted(_run(env, 1)) == ["observation-stacked"]
    assert sorted(env.observation_space.spaces) == ["observation-stacked"]


def test_spaces_are_updated_and_contain_the_observations(counter_env):
    env = ObservationStackWrapper.wrap(counter_env(), stack_config=[
        {"observation": "observation", "stack_steps": 4, "tag": "plain", "keep_original": True},
        {"observation": "observation", "stack_steps": 3, "tag": "delta", "delta": True}])
    space = env.observation_spaces_dict[0]
    assert sorted(space.spaces) == ["observation", "observation-delta", "observation-plain"]
    plain, delta = space["observation-plain"], space["observation-delta"]
    assert plain.shape == (4, 2) and plain.dtype == np.float32
    assert np.all(plain.low == -100) and np.all(plain.high == 100)
    assert delta.shape == (3, 2)
    assert delta.low.tolist() == [[-200, -200], [-200, -200], [-100, -100]]
    assert delta.high.tolist() == [[200, 200], [200, 200], [100, 100]]
    # The env's own space is left alone.
    assert env.env.observation_spaces_dict[0]["observation"].shape == (2,)
    for steps in range(6):
        assert space.contains(_run(env, steps))


def test_two_stacks_of_one_key_share_history(counter_env):
    env = ObservationStackWrapper.wrap(counter_env(), stack_config=[
        {"observation": "observation", "stack_steps": 2, "tag": "short", "keep_original": True},
        {"observation": "observation", "stack_steps": 4, "tag": "long"}])
    observation = _run(env, 4)
    assert observation["observation-short"][:, 0].tolist() == [3, 4]
    assert observation["observation-long"][:, 0].tolist() == [1, 2, 3, 4]
    assert observation["observation"].tolist() == [4, 14]


def test_reset_clears_the_history(counter_env):
    env = _wrap(counter_env(), stack_steps=3)
    _run(env, 5)
    assert env.reset()["observation"].tolist() == [[0, 0], [0, 0], [0, 10]]


def test_returned_stacks_are_independent_copies(counter_env):
    env = _wrap(counter_env(), stack_steps=2)
    first = env.reset()["observation"]
    second = env.step({"action": 0})[0]["observation"]
    assert first.tolist() == [[0, 0], [0, 10]]
    second[:] = -1
    assert env.step({"action": 0})[0]["observation"].tolist() == [[1, 11], [2, 12]]


def test_dict_observation_other_keys_pass_through(counter_env):
    env = ObservationStackWrapper.wrap(counter_env(dict_obs=True),
                                       stack_config=[{"observation": "vector", "stack_steps": 2}])
    observation = _run(env, 2)
    assert observation["count"] == 2
    assert observation["vector"].tolist() == [[1, 11], [2, 12]]
    assert env.observation_space["count"] == env.env.observation_space["count"]


def test_single_step_entry_changes_nothing(counter_env):
    env = _wrap(counter_env(), stack_steps=1, tag="x")
    assert sorted(_run(env, 1)) == ["observation"]
    assert env.observation_spaces_dict == env.env.observation_spaces_dict


def test_unsigned_delta_becomes_float():
    from gymnasium import spaces

    from maze_engine.wrappers.observation.stack import StackEntry, _stacked_space

    space = spaces.Box(low=0, high=255, shape=(2,), dtype=np.uint8)
    stacked = _stacked_space(space, StackEntry("image", stack_steps=2, delta=True))
    assert stacked.dtype == np.float32
    assert stacked.low.tolist() == [[-255, -255], [0, 0]]


def test_instantiate_from_config(counter_env):
    config = {"_target_": "maze_engine.ObservationStackWrapper",
              "stack_config": [{"observation": "observation", "stack_steps": 2, "keep_original": False,
                                "tag": None, "delta": False}]}
    env = instantiate(config, env=counter_env())
    assert isinstance(env, ObservationStackWrapper)
    assert env.reset()["observation"].shape == (2, 2)


@pytest.mark.parametrize(("entry", "field"), [
    ({"observation": "missing", "stack_steps": 2}, "stack_config[0].observation"),
    ({"observation": "count", "stack_steps": 2}, "stack_config[0].observation"),
    ({"observation": "vector", "stack_steps": 0}, "stack_config[0].stack_steps"),
    ({"observation": "vector"}, "stack_config[0].stack_steps"),
    ({"observation": "vector", "stack_steps": 2, "keep_original": True}, "stack_config[0].tag"),
    ({"observation": "vector", "stack_steps": 2, "steps": 3}, "stack_config[0]"),
    ("vector", "stack_config[0]"),
])
def test_config_errors_name_the_field(counter_env, entry, field):
    with pytest.raises(ConfigError, match=field.replace("[", r"\[").replace("]", r"\]")):
        ObservationStackWrapper(counter_env(dict_obs=True), stack_config=[entry])


def test_duplicate_output_keys_are_rejected(counter_env):
    entry = {"observation": "observation", "stack_steps": 2, "tag": "s"}
    with pytest.raises(ConfigError, match="observation-s"):
        ObservationStackWrapper(counter_env(), stack_config=[entry, dict(entry, stack_steps=3)])
