"""act_batch: one policy call per actor id, the same actions as act, and failures kept to their own item."""

import traceback
from typing import Any

import gymnasium as gym
import numpy as np
import pytest

from maze_engine import (
    ActorID,
    DeploymentFactory,
    EpisodeAbortedError,
    GymMazeEnv,
    LogStatsWrapper,
    MazeError,
    SpaceMismatchError,
    StepInput,
    Wrapper,
    act_batch,
)

ENV_CONFIG = {"_target_": "maze_engine.make_gym_maze_env", "name": "CartPole-v1"}
N = 6


def _factory(policy: Any, wrappers: Any = None) -> DeploymentFactory:
    return DeploymentFactory(policy, ENV_CONFIG, wrappers=wrappers or [LogStatsWrapper])


def _states(count: int, seed: int = 0) -> list[np.ndarray]:
    return [gym.make("CartPole-v1").reset(seed=seed + i)[0] for i in range(count)]


def test_act_batch_equals_act_and_calls_the_policy_once_per_batch(kit: Any) -> None:
    policy = kit.PolePolicy()
    factory = _factory(policy)
    batched = [factory.create() for _ in range(N)]
    single = [factory.create() for _ in range(N)]
    externals = [gym.make("CartPole-v1") for _ in range(N)]
    states = [external.reset(seed=i)[0] for i, external in enumerate(externals)]
    rewards: list[Any] = [None] * N
    for _ in range(5):
        items: list[Any] = [(d, (s, r, False, {})) for d, s, r in zip(batched, states, rewards, strict=True)]
        actions = act_batch(items, policy)
        expected = [d.act(s, r, False, {}) for d, s, r in zip(single, states, rewards, strict=True)]
        assert actions == expected
        steps = [external.step(action) for external, action in zip(externals, actions, strict=True)]
        states, rewards = [step[0] for step in steps], [float(step[1]) for step in steps]
    assert policy.batch_calls == [N] * 5
    for deployment in batched + single:
        deployment.close()
    assert [d.env.get_stats() for d in batched] == [d.env.get_stats() for d in single]


@pytest.mark.parametrize("form", ["tuple", "step_input", "mapping", "list"])
def test_inputs_in_every_form(form: str, kit: Any) -> None:
    policy = kit.PolePolicy()
    deployment = _factory(policy).create()
    state = _states(1)[0]
    inputs: Any = {
        "tuple": (state, None, False, {}),
        "step_input": StepInput(state, None, False, {}),
        "mapping": {"maze_state": state, "reward": None, "done": False, "info": {}},
        "list": [state, None, False, {}],
    }[form]
    assert act_batch([(deployment, inputs)], policy) == [1 if state[2] > 0 else 0]


def test_requests_are_grouped_by_actor_id() -> None:
    class TwoStepEnv(GymMazeEnv):
        """CartPole whose step keys 0 and 1 share the spaces, so actor ids can differ per state."""

        def __init__(self) -> None:
            super().__init__("CartPole-v1")
            maze_env: GymMazeEnv = self
            action, observation = maze_env.action_conversion_dict[0], maze_env.observation_conversion_dict[0]
            self.action_conversion_dict = {0: action, 1: action}
            self.observation_conversion_dict = {0: observation, 1: observation}
            self._action_spaces = {0: action.space(), 1: action.space()}
            self._observation_spaces = {0: observation.space(), 1: observation.space()}

    calls: list[tuple[Any, int]] = []

    class ActorPolicy:
        def compute_action(self, observation: Any, actor_id: Any = None, deterministic: bool = False) -> Any:
            raise AssertionError("the batch path must use compute_actions")

        def compute_actions(self, observations: Any, actor_id: Any, deterministic: bool) -> Any:
            calls.append((actor_id, len(observations)))
            return [{"action": np.int64(actor_id.step_key)} for _ in observations]

    factory = DeploymentFactory(ActorPolicy(), TwoStepEnv())
    deployments = [factory.create() for _ in range(5)]
    actors = [ActorID(i % 2, 0) for i in range(5)]
    state = _states(1)[0]
    items: list[Any] = [(d, (state, None, False, {}, None, actor))
                        for d, actor in zip(deployments, actors, strict=True)]
    actions = act_batch(items, ActorPolicy())
    assert actions == [0, 1, 0, 1, 0]
    assert sorted(calls) == [(ActorID(0, 0), 3), (ActorID(1, 0), 2)]


def test_a_failing_wrapper_fails_only_its_item(kit: Any) -> None:
    policy = kit.PolePolicy()
    built: list[Any] = []

    def failing_for_the_third(env: Any) -> Any:
        built.append(kit.FailingWrapper(env, fail_at=1 if len(built) == 2 else 10**9))
        return built[-1]

    factory = _factory(policy, wrappers=[failing_for_the_third, LogStatsWrapper])
    built.clear()  # count only the stacks of the deployments below
    deployments = [factory.create() for _ in range(4)]
    states = _states(4)
    results = act_batch([(d, (s, None, False, {})) for d, s in zip(deployments, states, strict=True)], policy)
    assert isinstance(results[2], KeyError)
    frames = traceback.extract_tb(results[2].__traceback__)
    assert (frames[-1].name, frames[-1].filename.rsplit("/", 1)[-1]) == ("step", "conftest.py")
    assert all(r in (0, 1) for i, r in enumerate(results) if i != 2)
    assert policy.batch_calls == [4]
    results = act_batch([(d, (s, 1.0, False, {})) for d, s in zip(deployments, states, strict=True)], policy)
    assert isinstance(results[2], EpisodeAbortedError) and results[2].cause.args == ("wrapper failure",)
    assert all(r in (0, 1) for i, r in enumerate(results) if i != 2)
    assert policy.batch_calls == [4, 3]


def test_bad_input_fails_only_its_item(kit: Any) -> None:
    policy = kit.PolePolicy()
    factory = _factory(policy)
    deployments = [factory.create() for _ in range(3)]
    state = _states(1)[0]
    results = act_batch([(deployments[0], (state, None, False, {})),
                         (deployments[1], (np.zeros(7), None, False, {})),
                         (deployments[2], (state, None, "no", {}))], policy)
    assert results[0] in (0, 1)
    assert isinstance(results[1], SpaceMismatchError) and results[1].field == "state"
    assert isinstance(results[2], SpaceMismatchError) and results[2].field == "done"
    assert deployments[1].act(state, None, False, {}) in (0, 1)  # bad input leaves the deployment usable


def test_a_failing_policy_fails_its_group_and_aborts_those_episodes() -> None:
    error = RuntimeError("policy failure")

    class BrokenPolicy:
        def compute_action(self, *args: Any, **kwargs: Any) -> Any:
            raise error

        def compute_actions(self, *args: Any, **kwargs: Any) -> Any:
            raise error

    factory = DeploymentFactory(BrokenPolicy(), ENV_CONFIG)
    deployments = [factory.create() for _ in range(2)]
    state = _states(1)[0]
    results = act_batch([(d, (state, None, False, {})) for d in deployments], BrokenPolicy())
    assert results == [error, error]
    assert all(d.failure is error and not d.request_pending for d in deployments)
    for deployment in deployments:
        deployment.reset()
        assert deployment.failure is None


def test_wrong_number_of_actions_is_reported(kit: Any) -> None:
    class ShortPolicy:
        def compute_actions(self, observations: Any, actor_id: Any, deterministic: bool) -> Any:
            return []

    deployment = _factory(kit.PolePolicy()).create()
    (result,) = act_batch([(deployment, (_states(1)[0], None, False, {}))], ShortPolicy())
    assert isinstance(result, MazeError) and "returned 0 actions for 1" in str(result)


def test_the_same_deployment_twice_fails_the_second_item(kit: Any) -> None:
    policy = kit.PolePolicy()
    deployment = _factory(policy).create()
    state = _states(1)[0]
    first, second = act_batch([(deployment, (state, None, False, {})), (deployment, (state, 1.0, False, {}))],
                              policy)
    assert first in (0, 1)
    assert isinstance(second, MazeError) and "pending" in str(second)


def test_policy_without_compute_actions_is_called_per_item(kit: Any) -> None:
    class SingleOnly:
        calls = 0

        def compute_action(self, observation: Any, actor_id: Any = None, deterministic: bool = False) -> Any:
            SingleOnly.calls += 1
            return {"action": np.int64(1)}

    deployments = [_factory(SingleOnly()).create() for _ in range(3)]
    state = _states(1)[0]
    assert act_batch([(d, (state, None, False, {})) for d in deployments], SingleOnly()) == [1, 1, 1]
    assert SingleOnly.calls == 3


class SkipStepWrapper(Wrapper[Any]):
    """Repeats each policy action once more: two external steps per policy decision (step skipping)."""

    def step(self, action: dict[str, Any]) -> Any:
        observation, reward, done, info = self.env.step(action)
        if done:
            return observation, reward, done, info
        observation, second_reward, done, info = self.env.step(action)
        return observation, reward + second_reward, done, info


def test_step_skipping_stack_answers_without_the_policy(kit: Any) -> None:
    policy = kit.PolePolicy()
    factory = _factory(policy, wrappers=[SkipStepWrapper, LogStatsWrapper])
    deployment = factory.create()
    state = _states(1)[0]
    first = act_batch([(deployment, (state, None, False, {}))], policy)
    second = act_batch([(deployment, (state, 1.0, False, {}))], policy)  # the repeat: no policy call
    third = act_batch([(deployment, (state, 1.0, False, {}))], policy)
    assert first == second
    assert policy.batch_calls == [1, 1]
    assert third in ([0], [1])
    deployment.close(state, 1.0, True, {})
    stats = deployment.env.get_stats()
    assert stats["episode_length"]["max"] == 2 and stats["episode_return"]["max"] == 3.0


def test_actions_out_reports_the_policy_actions_each_item_was_resumed_with(kit: Any) -> None:
    policy = kit.PolePolicy()
    factory = _factory(policy, wrappers=[SkipStepWrapper, LogStatsWrapper])
    deployments = [factory.create() for _ in range(3)]
    states = _states(3)
    actions: list[list[Any]] = [["stale"]]
    results = act_batch([(d, (s, None, False, {})) for d, s in zip(deployments, states, strict=True)],
                        policy, actions_out=actions)
    assert len(actions) == 3 and all(len(item) == 1 for item in actions)
    assert [item[0]["action"] for item in actions] == results  # CartPole: the maze_action is the action
    # The step-skipping wrapper answers the next state by itself: no policy action to record.
    act_batch([(deployments[0], (states[0], 1.0, False, {}))], policy, actions_out=actions)
    assert actions == [[]]
    # A failing item records nothing either.
    act_batch([(deployments[1], ("not a state", 1.0, False, {}))], policy, actions_out=actions)
    assert actions == [[]]


def test_observations_and_log_probs_out_come_beside_the_actions(kit: Any) -> None:
    from maze_engine import RandomPolicy

    factory = _factory({"_target_": "maze_engine.RandomPolicy", "seed": 0})
    assert isinstance(factory.policy, RandomPolicy)
    deployments = [factory.create() for _ in range(4)]
    states = _states(4)
    actions: list[list[Any]] = []
    observations: list[list[Any]] = []
    log_probs: list[list[float | None]] = []
    act_batch([(d, (s, None, False, {})) for d, s in zip(deployments, states, strict=True)], factory.policy,
              actions_out=actions, observations_out=observations, log_probs_out=log_probs)
    assert [len(item) for item in observations] == [1] * 4
    for observation, state in zip(observations, states, strict=True):
        np.testing.assert_allclose(observation[0]["observation"], state)
    assert log_probs == [[pytest.approx(-np.log(2))]] * 4  # uniform over CartPole's two actions


def test_log_probs_are_none_where_the_policy_cannot_say(kit: Any) -> None:
    policy = kit.PolePolicy()
    deployments = [_factory(policy).create() for _ in range(2)]
    log_probs: list[list[float | None]] = []
    act_batch([(d, (s, None, False, {})) for d, s in zip(deployments, _states(2), strict=True)], policy,
              log_probs_out=log_probs)
    assert log_probs == [[None], [None]]
