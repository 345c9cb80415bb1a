"""A deployment driven by an external env matches a plain loop over the same wrapped env and seeds."""

import copy
from typing import Any

import numpy as np
import pytest

from maze_engine import (
    AgentDeployment,
    DeploymentFactory,
    GymMazeEnv,
    LogStatsWrapper,
    ObservationStackWrapper,
    RandomPolicy,
    StructuredPolicy,
)

SEEDS = (11, 12, 13, 14)
STACK = [{"observation": "observation", "stack_steps": 3, "keep_original": True, "tag": "stacked"}]


class RecordingPolicy(StructuredPolicy):
    """Forwards to ``policy`` and keeps a copy of every observation it was asked about."""

    def __init__(self, policy: Any) -> None:
        self.policy = policy
        self.observations: list[dict[str, Any]] = []

    def compute_action(self, observation: dict[str, Any], actor_id: Any = None,
                       deterministic: bool = False) -> dict[str, Any]:
        self.observations.append(copy.deepcopy(observation))
        return self.policy.compute_action(observation, actor_id, deterministic)


def _wrapped_env() -> Any:
    env = ObservationStackWrapper.wrap(GymMazeEnv("CartPole-v1"), stack_config=STACK)
    return LogStatsWrapper.wrap(env)


def _policy(kind: str, env: Any, kit: Any) -> RecordingPolicy:
    inner = RandomPolicy(env.action_spaces_dict, seed=7) if kind == "random" else kit.PolePolicy()
    return RecordingPolicy(inner)


def _plain_loop(kind: str, kit: Any) -> tuple[list[Any], dict[str, Any], list[dict[str, Any]]]:
    env = _wrapped_env()
    policy = _policy(kind, env, kit)
    maze_actions = []
    for seed in SEEDS:
        env.seed(seed)
        observation = env.reset()
        done = False
        while not done:
            action = policy.compute_action(observation, actor_id=env.actor_id())
            observation, _, done, _ = env.step(action)
            maze_actions.append(env.maze_env.last_maze_action)
    env.reset()
    return maze_actions, env.get_stats(), policy.observations


def _deployment(kind: str, kit: Any, deployment: Any = None) -> tuple[list[Any], dict[str, Any],
                                                                       list[dict[str, Any]]]:
    if deployment is None:
        env = _wrapped_env()
        deployment = AgentDeployment(_policy(kind, env, kit), env)
    actions = [action for seed in SEEDS for action in kit.drive_episode(deployment, seed=seed).actions]
    return actions, deployment.env.get_stats(), deployment.policy.observations


def _assert_same(plain: Any, deployed: Any) -> None:
    plain_actions, plain_stats, plain_observations = plain
    actions, stats, observations = deployed
    assert [int(a) for a in actions] == [int(a) for a in plain_actions]
    assert stats == plain_stats
    assert stats["episode_return"]["count"] == len(SEEDS)
    assert len(observations) == len(plain_observations)
    for ours, theirs in zip(observations, plain_observations, strict=True):
        assert ours.keys() == theirs.keys()
        for key in ours:
            np.testing.assert_array_equal(ours[key], theirs[key])


@pytest.mark.parametrize("kind", ["random", "deterministic"])
def test_deployment_matches_plain_loop(kind: str, kit: Any) -> None:
    _assert_same(_plain_loop(kind, kit), _deployment(kind, kit))


@pytest.mark.parametrize("kind", ["random", "deterministic"])
def test_factory_deployment_matches_plain_loop(kind: str, kit: Any) -> None:
    env = GymMazeEnv("CartPole-v1")
    factory = DeploymentFactory(_policy(kind, env, kit), env, wrappers=[
        {"_target_": "maze_engine.ObservationStackWrapper", "stack_config": STACK}, LogStatsWrapper])
    _assert_same(_plain_loop(kind, kit), _deployment(kind, kit, factory.create()))


def test_split_api_matches_act(kit: Any) -> None:
    """observe -> compute_action -> resume gives what act gives."""
    plain = _plain_loop("deterministic", kit)
    env = _wrapped_env()
    policy = _policy("deterministic", env, kit)
    deployment = AgentDeployment(policy, env)

    class SplitDriver:
        def act(self, *args: Any) -> Any:
            request = deployment.observe(*args)
            return deployment.resume(policy.compute_action(request.observation, request.actor_id))

        def close(self, *args: Any) -> None:
            deployment.close(*args)

    actions = [action for seed in SEEDS for action in kit.drive_episode(SplitDriver(), seed=seed).actions]
    _assert_same(plain, (actions, deployment.env.get_stats(), policy.observations))
