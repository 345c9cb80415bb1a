"""DeploymentFactory: cheap independent deployments sharing one policy; 10,000 open at once on one thread."""

import threading
from typing import Any

import gymnasium as gym
import numpy as np
import pytest

from maze_engine import (
    DeploymentFactory,
    GymMazeEnv,
    LogStatsWrapper,
    ObservationStackWrapper,
    RandomPolicy,
    TimeLimitWrapper,
    act_batch,
)

POLICY_CONFIG = {"_target_": "maze_engine.RandomPolicy", "seed": 0}
ENV_CONFIG = {"_target_": "maze_engine.make_gym_maze_env", "name": "CartPole-v1"}
STATE = np.zeros(4, dtype=np.float32)


def test_ten_thousand_open_deployments_on_one_thread() -> None:
    factory = DeploymentFactory(POLICY_CONFIG, ENV_CONFIG, wrappers={"maze_engine.LogStatsWrapper": {}})
    threads = threading.active_count()
    deployments = [factory.create() for _ in range(10_000)]
    for deployment in deployments:
        assert deployment.act(STATE, None, False, {}) in (0, 1)
    assert threading.active_count() == threads
    assert all(deployment.episode_open for deployment in deployments)
    actions = act_batch([(deployment, (STATE, 1.0, False, {})) for deployment in deployments], factory.policy)
    assert set(actions) <= {0, 1}
    for deployment in deployments:
        deployment.close(STATE, 1.0, True, {})
    assert threading.active_count() == threads
    assert not any(deployment.episode_open for deployment in deployments)
    lengths = {deployment.env.last_episode_stats.episode_length for deployment in deployments}
    assert lengths == {2}


def test_create_builds_no_gymnasium_env(monkeypatch: pytest.MonkeyPatch) -> None:
    factory = DeploymentFactory(POLICY_CONFIG, ENV_CONFIG, wrappers=[LogStatsWrapper])
    made: list[Any] = []
    real_make = gym.make

    def counting_make(*args: Any, **kwargs: Any) -> Any:
        made.append(args)
        return real_make(*args, **kwargs)

    monkeypatch.setattr(gym, "make", counting_make)
    first, second = factory.create(), factory.create()
    assert made == []
    assert first.env.maze_env.gym_env is second.env.maze_env.gym_env is factory.template_env.maze_env.gym_env


def test_deployments_share_the_policy_and_spaces_but_not_state() -> None:
    factory = DeploymentFactory(POLICY_CONFIG, ENV_CONFIG, wrappers=[LogStatsWrapper])
    first, second = factory.create(), factory.create()
    assert first.policy is second.policy is factory.policy
    assert first.env is not second.env and first.core_env is not second.core_env
    assert first.env.maze_env is not second.env.maze_env
    assert first.env.observation_spaces_dict is second.env.observation_spaces_dict
    first.act(STATE, None, False, {})
    first.close(STATE, 1.0, True, {})
    assert first.env.get_stats()["episode_return"]["count"] == 1
    assert second.env.get_stats()["episode_return"]["count"] == 0
    assert factory.template_env.get_stats()["episode_return"]["count"] == 0


def test_instance_wrappers_are_cloned_per_deployment() -> None:
    env = ObservationStackWrapper.wrap(GymMazeEnv("CartPole-v1"), stack_config=[
        {"observation": "observation", "stack_steps": 2}])
    limit = TimeLimitWrapper(env, max_episode_steps=2)
    factory = DeploymentFactory(RandomPolicy(env.action_spaces_dict, seed=0), env, wrappers=[limit])
    first, second = factory.create(), factory.create()
    assert isinstance(first.env, TimeLimitWrapper) and first.env is not limit and second.env is not limit
    assert isinstance(first.env.env, ObservationStackWrapper) and first.env.env is not second.env.env
    ones = np.ones(4, dtype=np.float32)
    first.observe(ones, None, False, {})
    request = second.observe(STATE, None, False, {})
    # Each stack keeps its own frames: the second one never saw the first one's state.
    assert not request.observation["observation"].any()
    first.resume({"action": 0})
    first.observe(ones, 1.0, False, {})
    assert first.env.elapsed_steps == 1 and second.env.elapsed_steps == 0


def test_wrapper_forms_build_the_same_stack() -> None:
    forms: list[Any] = [
        [LogStatsWrapper],
        ["maze_engine.LogStatsWrapper"],
        [{"_target_": "maze_engine.LogStatsWrapper", "logging_prefix": "p"}],
        {"maze_engine.LogStatsWrapper": {"logging_prefix": "p"}},
        {LogStatsWrapper: None},
        [{"maze.core.wrappers.log_stats_wrapper.LogStatsWrapper": {}}],
    ]
    for form in forms:
        deployment = DeploymentFactory(POLICY_CONFIG, ENV_CONFIG, wrappers=form).create()
        assert type(deployment.env) is LogStatsWrapper
        assert isinstance(deployment.env.env, GymMazeEnv)


def test_mixed_wrapper_list_applies_in_order() -> None:
    limit = TimeLimitWrapper(GymMazeEnv("CartPole-v1"), max_episode_steps=5)
    wrappers: list[Any] = [{"maze_engine.LogStatsWrapper": {}}, limit,
                           {"_target_": "maze_engine.LogStatsWrapper"}]
    deployment = DeploymentFactory(POLICY_CONFIG, ENV_CONFIG, wrappers=wrappers).create()
    layers = [type(layer).__name__ for layer in deployment.env.wrapper_stack()]
    assert layers == ["LogStatsWrapper", "TimeLimitWrapper", "LogStatsWrapper"]
    assert deployment.env.env.max_episode_steps == 5


@pytest.mark.parametrize(("wrappers", "message"), [
    (42, "wrappers: expected a list"),
    ([42], r"wrappers\[0\]: expected a wrapper"),
    ({"maze_engine.LogStatsWrapper": 3}, "expected a mapping of constructor arguments"),
    ([{"_target_": "maze_engine.RandomPolicy"}], "takes no 'env' argument"),
    ([{"_target_": "maze_engine.TimeLimitWrapper", "max_steps": 3}], "rejected its arguments"),
    (["maze_engine.NoSuchWrapper"], "cannot import"),
])
def test_bad_wrapper_configs_are_reported(wrappers: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        DeploymentFactory(POLICY_CONFIG, ENV_CONFIG, wrappers=wrappers)


@pytest.mark.parametrize(("policy", "env", "message"), [
    (POLICY_CONFIG, 42, "env: expected"),
    (POLICY_CONFIG, {"_target_": "maze_engine.EventRecord", "name": "x"}, "env: .*expected a StructuredEnv"),
    ({"_target_": "maze_engine.RandomPolicy", "seed": "x", "extra": 1}, ENV_CONFIG, "policy: "),
    (object(), ENV_CONFIG, "policy: expected a StructuredPolicy"),
])
def test_bad_env_and_policy_configs_are_reported(policy: Any, env: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        DeploymentFactory(policy, env)


def test_env_without_a_maze_env_is_reported() -> None:
    class NotAMazeEnv(LogStatsWrapper):
        maze_env = None

    with pytest.raises(ValueError, match="no MazeEnv at its bottom"):
        DeploymentFactory(POLICY_CONFIG, NotAMazeEnv(GymMazeEnv("CartPole-v1")))


def test_an_instance_layer_that_cannot_be_copied_is_reported_at_once() -> None:
    class LockedWrapper(LogStatsWrapper):
        def __init__(self, env: Any) -> None:
            super().__init__(env)
            self.lock = threading.Lock()

    with pytest.raises(ValueError, match="cannot be copied for each deployment.*give it as a config"):
        DeploymentFactory(POLICY_CONFIG, ENV_CONFIG, wrappers=[LockedWrapper(GymMazeEnv("CartPole-v1"))])
    factory = DeploymentFactory(POLICY_CONFIG, ENV_CONFIG, wrappers=[LockedWrapper])  # as a config: rebuilt
    assert factory.create().env.lock is not factory.create().env.lock
