"""Bad input names its field; exceptions in wrappers or the policy reach the caller and abort the episode."""

import threading
import traceback
from typing import Any

import greenlet
import numpy as np
import pytest

from maze_engine import (
    ActorID,
    AgentDeployment,
    EpisodeAbortedError,
    EventRecord,
    GymMazeEnv,
    LogStatsWrapper,
    MazeError,
    RandomPolicy,
    SpaceMismatchError,
)

STATE = np.zeros(4, dtype=np.float32)


def _deployment(wrappers: Any = None, policy: Any = None) -> AgentDeployment:
    env = GymMazeEnv("CartPole-v1")
    policy = policy if policy is not None else RandomPolicy(env.action_spaces_dict, seed=0)
    return AgentDeployment(policy, env, wrappers=wrappers if wrappers is not None else [LogStatsWrapper])


BAD_FIRST_INPUTS = [
    ({"maze_state": np.zeros(5, dtype=np.float32)}, "state", "shape (4,)"),
    ({"maze_state": np.zeros((2, 2), dtype=np.float32)}, "state", "shape (4,)"),
    ({"maze_state": [0.0, 0.0, float("nan"), 0.0]}, "state", "finite"),
    ({"maze_state": np.array([0, 0, np.inf, 0], dtype=np.float32)}, "state", "finite"),
    ({"maze_state": ["a", "b", "c", "d"]}, "state", "numbers"),
    ({"maze_state": None}, "state", "numbers"),
    ({"maze_state": {"observation": STATE}}, "state", "numbers"),
    ({"reward": "1.0"}, "reward", "a number"),
    ({"reward": True}, "reward", "a number"),
    ({"reward": float("nan")}, "reward", "finite"),
    ({"reward": [1.0]}, "reward", "a number"),
    ({"done": 0}, "done", "a bool"),
    ({"done": "false"}, "done", "a bool"),
    ({"done": None}, "done", "a bool"),
    ({"info": [("a", 1)]}, "info", "a map"),
    ({"info": "x"}, "info", "a map"),
    ({"events": "event"}, "events", "a list of EventRecord"),
    ({"events": ["event"]}, "events[0]", "an EventRecord"),
    ({"actor_id": ActorID(5, 0)}, "actor_id", "a step_key"),
    ({"actor_id": (0,)}, "actor_id", "an ActorID"),
    ({"actor_id": ("x", "y")}, "actor_id", "an integer agent_id"),
    ({"actor_id": ([0], 0)}, "actor_id", "a step_key"),
]


def _call(method: Any, overrides: dict[str, Any], reward: Any = None) -> Any:
    arguments = {"maze_state": STATE, "reward": reward, "done": False, "info": {}, **overrides}
    return method(**arguments)


@pytest.mark.parametrize(("overrides", "field", "expected"), BAD_FIRST_INPUTS)
@pytest.mark.parametrize("method", ["act", "observe"])
def test_bad_input_names_the_field(overrides: dict[str, Any], field: str, expected: str, method: str) -> None:
    deployment = _deployment()
    with pytest.raises(SpaceMismatchError) as caught:
        _call(getattr(deployment, method), overrides)
    assert caught.value.field == field
    assert expected in str(caught.value)
    assert not deployment.episode_open and deployment.failure is None


@pytest.mark.parametrize(("overrides", "field", "expected"), BAD_FIRST_INPUTS)
def test_bad_input_mid_episode_leaves_the_deployment_as_it_was(overrides: dict[str, Any], field: str,
                                                               expected: str) -> None:
    deployment = _deployment()
    deployment.act(STATE, None, False, {})
    with pytest.raises(SpaceMismatchError) as caught:
        _call(deployment.act, overrides, reward=1.0)
    assert caught.value.field == field
    assert deployment.failure is None
    deployment.act(STATE, 1.0, False, {})
    deployment.close(STATE, 1.0, True, {})
    assert deployment.env.last_episode_stats.episode_length == 2


def test_reward_none_is_only_for_the_first_state() -> None:
    deployment = _deployment()
    deployment.act(STATE, None, False, {})
    with pytest.raises(SpaceMismatchError, match="reward: expected a number"):
        deployment.act(STATE, None, False, {})
    with pytest.raises(SpaceMismatchError, match="reward"):
        deployment.close(STATE, None, True, {})


def test_accepted_input_forms() -> None:
    deployment = _deployment()
    # A list state, a numpy bool, info None and a plain pair as actor id are all accepted.
    deployment.act([0.0, 0.1, 0.2, 0.3], None, np.bool_(False), None, None, (0, 0))
    deployment.act(np.zeros(4), np.float32(1.0), False, {"k": 1}, [EventRecord("hit", {"v": 1})])
    assert [event.name for event in deployment.core_env.get_step_events()] == ["hit"]
    deployment.act(STATE, 1, False, {}, ())
    assert deployment.core_env.get_step_events() == []
    deployment.close()
    assert deployment.env.last_episode_stats.episode_return == 2.0


def test_wrapper_exception_reaches_the_caller_with_its_traceback(kit: Any) -> None:
    deployment = _deployment(wrappers=[{"_target_": kit.FailingWrapper, "fail_at": 2}, LogStatsWrapper])
    deployment.act(STATE, None, False, {})
    with pytest.raises(KeyError) as caught:
        deployment.act(STATE, 1.0, False, {})
    frames = traceback.extract_tb(caught.value.__traceback__)
    assert frames[-1].name == "step" and frames[-1].filename.endswith("conftest.py")
    assert deployment.failure is caught.value and not deployment.episode_open


def test_aborted_episode_raises_until_reset(kit: Any) -> None:
    deployment = _deployment(wrappers=[{"_target_": kit.FailingWrapper, "fail_at": 1}, LogStatsWrapper])
    with pytest.raises(KeyError) as caught:
        deployment.act(STATE, None, False, {})
    for _ in range(2):
        with pytest.raises(EpisodeAbortedError, match="aborted by KeyError") as aborted:
            deployment.act(STATE, 1.0, False, {})
        assert aborted.value.cause is caught.value and aborted.value.__cause__ is caught.value
    deployment.reset()
    deployment.act(STATE, None, False, {})  # a new episode (the failing step was the wrapper's first)
    deployment.close(STATE, 1.0, True, {})
    assert deployment.env.last_episode_stats.episode_length == 1


def test_close_clears_an_abort_and_flushes_the_aborted_episode(kit: Any) -> None:
    deployment = _deployment(wrappers=[LogStatsWrapper, {"_target_": kit.FailingWrapper, "fail_at": 3}])
    deployment.act(STATE, None, False, {})
    deployment.act(STATE, 1.0, False, {})
    with pytest.raises(KeyError):
        deployment.act(STATE, 1.0, False, {})
    deployment.close(STATE, 1.0, True, {})  # the final state is ignored: the episode was aborted
    assert deployment.failure is None
    stats = deployment.env.last_episode_stats
    # Two steps completed below the failing wrapper before it raised on the way down with the third action.
    assert (stats.episode_length, stats.truncated) == (2, True)


def test_policy_exception_reaches_the_caller_and_aborts() -> None:
    class BrokenPolicy:
        def compute_action(self, *args: Any, **kwargs: Any) -> Any:
            raise ZeroDivisionError("policy failure")

    deployment = _deployment(policy=BrokenPolicy())
    with pytest.raises(ZeroDivisionError) as caught:
        deployment.act(STATE, None, False, {})
    assert traceback.extract_tb(caught.value.__traceback__)[-1].name == "compute_action"
    with pytest.raises(EpisodeAbortedError):
        deployment.act(STATE, None, False, {})
    deployment.reset()
    assert deployment.failure is None


def test_split_api_misuse_is_reported() -> None:
    deployment = _deployment()
    with pytest.raises(MazeError, match="resume: no PolicyRequest is pending"):
        deployment.resume({"action": 0})
    request = deployment.observe(STATE, None, False, {})
    assert deployment.request_pending and request.deployment is deployment
    with pytest.raises(MazeError, match="observe: a PolicyRequest is pending"):
        deployment.observe(STATE, 1.0, False, {})
    with pytest.raises(MazeError, match="close: a PolicyRequest is pending"):
        deployment.close(STATE, 1.0, True, {})
    assert deployment.resume({"action": 1}) == 1
    with pytest.raises(MazeError, match="no PolicyRequest"):
        deployment.resume({"action": 1})


def test_close_without_state_drops_a_pending_request() -> None:
    deployment = _deployment()
    deployment.observe(STATE, None, False, {})
    deployment.close()
    assert not deployment.request_pending and not deployment.episode_open
    assert deployment.act(STATE, None, False, {}) in (0, 1)


def test_abort_from_a_caller_that_computes_actions_itself() -> None:
    deployment = _deployment()
    deployment.observe(STATE, None, False, {})
    error = RuntimeError("batched policy failed")
    deployment.abort(error)
    with pytest.raises(EpisodeAbortedError) as aborted:
        deployment.observe(STATE, 1.0, False, {})
    assert aborted.value.cause is error
    deployment.reset()
    assert deployment.observe(STATE, None, False, {}).observation["observation"].shape == (4,)


def test_an_episode_stays_on_its_thread_and_any_thread_can_start_one() -> None:
    deployment = _deployment()
    deployment.act(STATE, None, False, {})
    errors: list[BaseException] = []

    def act_elsewhere() -> None:
        try:
            deployment.act(STATE, 1.0, False, {})
        except MazeError as err:
            errors.append(err)

    thread = threading.Thread(target=act_elsewhere)
    thread.start()
    thread.join()
    assert len(errors) == 1 and "driven from the thread that started it" in str(errors[0])
    assert deployment.failure is None and deployment.episode_open
    deployment.act(STATE, 1.0, False, {})  # the episode goes on in its own thread
    deployment.close(STATE, 1.0, True, {})
    assert deployment.env.last_episode_stats.episode_length == 2

    def whole_episode() -> None:
        deployment.act(STATE, None, False, {})
        deployment.close(STATE, 1.0, True, {})

    thread = threading.Thread(target=whole_episode)
    thread.start()
    thread.join()
    assert deployment.env.get_stats()["episode_return"]["count"] == 2


def test_a_caller_greenlet_gets_the_result_back() -> None:
    deployment = _deployment()
    outer = greenlet.greenlet(lambda: deployment.act(STATE, None, False, {}))
    assert outer.switch() in (0, 1)
    assert deployment.act(STATE, 1.0, False, {}) in (0, 1)  # now from the main greenlet
