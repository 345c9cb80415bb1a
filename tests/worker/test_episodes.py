"""EpisodeTable without a broker: sequence rules, replays, capacity, errors, eviction and batching."""

import sys
from pathlib import Path
from typing import Any

import msgpack
import numpy as np
import pytest

from maze_engine.wrappers.wrapper import Wrapper
from worker.episodes.batching import rounds
from worker.episodes.closing import CloseReason, FinishedEpisodes
from worker.episodes.table import EpisodeTable
from worker.serving.factory import build_factory
from worker.settings import EpisodeSettings
from worker.wire.protocol import ErrorCode, StateMessage
from worker.wire.replies import Reply, encode_action_reply, encode_reply, to_wire_action

sys.path.insert(0, str(Path(__file__).parent))
from worker_harness import CARTPOLE, SignPolicy, state  # noqa: E402


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def make_table(policy: Any = None, wrappers: Any = None, clock: Clock | None = None,
               **settings: Any) -> EpisodeTable:
    policy = policy if policy is not None else SignPolicy()
    return EpisodeTable(build_factory(policy, CARTPOLE, wrappers), EpisodeSettings(**settings),
                        clock=clock or Clock())


def msg(episode: str, seq: int, first: float = 0.1, done: bool = False, reward: Any = "auto",
        state_value: Any = None) -> StateMessage:
    reward = (None if seq == 0 else 1.0) if reward == "auto" else reward
    value = state(first) if state_value is None else state_value
    return StateMessage(1, episode, seq, value, reward, done, None)


def decode(answer: Any) -> dict[str, Any]:
    return msgpack.unpackb(answer.body)


def test_each_episode_of_a_batch_gets_its_own_action_from_one_policy_call() -> None:
    policy = SignPolicy()
    table = make_table(policy)
    firsts = [(-1) ** index * (index + 1) / 100 for index in range(40)]
    answers = table.handle([msg(f"e{index}", 0, first) for index, first in enumerate(firsts)])
    assert [decode(a)["action"] for a in answers] == [SignPolicy.expected([first]) for first in firsts]
    assert [decode(a)["episode"] for a in answers] == [f"e{index}" for index in range(40)]
    assert policy.batch_sizes == [40]
    assert len(table) == 40


def test_a_repeated_state_gets_the_same_reply_without_a_second_step() -> None:
    table = make_table()
    table.handle([msg("e", 0)])
    first = table.handle([msg("e", 1, 0.5)])[0]
    again = table.handle([msg("e", 1, -0.5)])[0]  # a redelivery: the state is not looked at again
    assert again.body == first.body and again.code is None
    step = table.handle([msg("e", 2, -0.5)])[0]
    assert decode(step)["action"] == 0 and decode(step)["seq"] == 2


def test_states_of_one_episode_in_one_batch_are_stepped_in_seq_order() -> None:
    policy = SignPolicy()
    table = make_table(policy)
    answers = table.handle([msg("e", 2, -0.3), msg("other", 0, 0.2), msg("e", 0, 0.1), msg("e", 1, -0.2)])
    assert [(decode(a)["seq"], decode(a)["action"], a.code) for a in answers] == \
        [(2, 0, None), (0, 1, None), (0, 1, None), (1, 0, None)]
    assert policy.batch_sizes == [2, 1, 1]


@pytest.mark.parametrize(("seq", "fragment"), [(3, "expected 2"), (25, "expected 2")])
def test_a_gap_is_out_of_order_and_the_episode_goes_on(seq: int, fragment: str) -> None:
    table = make_table()
    table.handle([msg("e", 0), msg("e", 1)])
    answer = table.handle([msg("e", seq)])[0]
    assert answer.code == ErrorCode.OUT_OF_ORDER and fragment in decode(answer)["error"]["message"]
    assert table.handle([msg("e", 2)])[0].code is None


def test_a_seq_older_than_the_replay_window_is_out_of_order() -> None:
    table = make_table(replay_window=2)
    table.handle([msg("e", 0), msg("e", 1), msg("e", 2), msg("e", 3)])
    assert table.handle([msg("e", 2)])[0].code is None  # still in the window
    answer = table.handle([msg("e", 1)])[0]
    assert answer.code == ErrorCode.OUT_OF_ORDER
    assert "older than the last 2" in decode(answer)["error"]["message"]


def test_unknown_episodes_and_finished_ones_are_named() -> None:
    table = make_table()
    answer = table.handle([msg("nobody", 4)])[0]
    assert answer.code == ErrorCode.UNKNOWN_EPISODE
    assert "no such episode" in decode(answer)["error"]["message"]
    table.handle([msg("e", 0)])
    final = table.handle([msg("e", 1, done=True)])[0]
    assert decode(final) == {"v": 1, "episode": "e", "seq": 1, "action": None, "error": None,
                             "policy_version": None}
    assert table.handle([msg("e", 1, done=True)])[0].body == final.body  # redelivered final state
    late = table.handle([msg("e", 2)])[0]
    assert late.code == ErrorCode.UNKNOWN_EPISODE and "finished at seq 1" in decode(late)["error"]["message"]
    assert table.handle([msg("e", 0)])[0].code is None  # the id may start a new episode


def test_done_closes_the_episode_and_flushes_its_statistics() -> None:
    closed: list[Any] = []
    table = make_table()
    table.on_closed = closed.append
    table.handle([msg("e", 0)])
    for seq in range(1, 5):
        table.handle([msg("e", seq)])
    table.handle([msg("e", 5, done=True, reward=2.0)])
    assert "e" not in table
    assert [(c.episode, c.reason, c.last_seq) for c in closed] == [("e", CloseReason.DONE, 5)]
    assert closed[0].stats.episode_length == 5 and closed[0].stats.episode_return == 6.0
    finished = table.finished.take()
    assert finished.total == 1 and finished.returns.summary()["mean"] == 6.0
    assert table.finished.total == 0


def test_capacity_refuses_new_episodes_with_overloaded() -> None:
    table = make_table(max_open=2)
    answers = table.handle([msg("a", 0), msg("b", 0), msg("c", 0)])
    assert [a.code for a in answers] == [None, None, ErrorCode.OVERLOADED]
    assert "maximum of 2" in decode(answers[2])["error"]["message"]
    table.handle([msg("a", 1, done=True)])
    assert table.handle([msg("c", 0)])[0].code is None


@pytest.mark.parametrize(("bad", "field"), [
    ({"state_value": [0.0, 1.0]}, "state"),
    ({"state_value": [0.0, "x", 1.0, 2.0]}, "state"),
    ({"state_value": [0.0, float("nan"), 1.0, 2.0]}, "state"),
    ({"state_value": {"a": 1}}, "state"),
    ({"reward": None}, "reward"),
])
def test_bad_input_is_bad_message_naming_the_field_and_leaves_the_episode(bad: dict[str, Any],
                                                                          field: str) -> None:
    table = make_table()
    table.handle([msg("e", 0)])
    answer = table.handle([msg("e", 1, **bad), msg("f", 0, 0.3)])
    assert answer[0].code == ErrorCode.BAD_MESSAGE and decode(answer[0])["error"]["message"].startswith(field)
    assert answer[1].code is None
    assert table.handle([msg("e", 1, -0.4)])[0].code is None  # the same seq, corrected


def test_a_bad_first_state_leaves_no_episode_behind() -> None:
    table = make_table()
    assert table.handle([msg("e", 0, state_value=[1, 2])])[0].code == ErrorCode.BAD_MESSAGE
    assert "e" not in table
    assert table.handle([msg("e", 0)])[0].code is None


def test_a_failing_policy_answers_internal_for_that_state_only() -> None:
    table = make_table(SignPolicy(fail_above=5.0))
    table.handle([msg("a", 0), msg("b", 0)])
    answers = table.handle([msg("a", 1, 9.0), msg("b", 1, 0.5)])
    assert answers[0].code == ErrorCode.INTERNAL
    assert "policy failure" in decode(answers[0])["error"]["message"]
    assert answers[1].code is None and decode(answers[1])["action"] == 1
    assert "a" not in table and "b" in table
    assert table.handle([msg("a", 2)])[0].code == ErrorCode.UNKNOWN_EPISODE
    assert table.finished.by_reason == {"error": 1}


class FailOnNegativeReward(Wrapper[Any]):
    def step(self, action: dict[str, Any]) -> Any:
        observation, reward, done, info = self.env.step(action)
        if reward < 0:
            raise ValueError("wrapper failure")
        return observation, reward, done, info


def test_a_failing_wrapper_answers_internal_and_the_worker_goes_on() -> None:
    table = make_table(wrappers=[FailOnNegativeReward])
    table.handle([msg("a", 0), msg("b", 0)])
    answers = table.handle([msg("a", 1, reward=-1.0), msg("b", 1, reward=1.0)])
    assert answers[0].code == ErrorCode.INTERNAL
    assert "wrapper failure" in decode(answers[0])["error"]["message"]
    assert answers[1].code is None
    assert table.handle([msg("c", 0)])[0].code is None


def test_idle_episodes_are_evicted_with_statistics_flushed() -> None:
    clock = Clock()
    table = make_table(clock=clock, idle_timeout_s=10)
    table.handle([msg("old", 0), msg("new", 0)])
    for seq in (1, 2, 3):
        table.handle([msg("old", seq)])
    clock.now += 6
    table.handle([msg("new", 1)])
    clock.now += 5
    assert table.evict_idle() == 1
    assert "old" not in table and "new" in table
    finished = table.finished.take()
    assert finished.by_reason == {"idle": 1} and finished.lengths.summary()["mean"] == 3
    late = table.handle([msg("old", 4)])[0]
    assert late.code == ErrorCode.UNKNOWN_EPISODE and "without a state" in decode(late)["error"]["message"]


def test_close_all_closes_every_open_episode() -> None:
    table = make_table()
    table.handle([msg(f"e{i}", 0) for i in range(5)])
    assert table.close_all() == 5 and len(table) == 0
    assert table.finished.by_reason == {"shutdown": 5}


def test_actor_ids_from_the_wire_reach_the_deployment() -> None:
    table = make_table()
    answer = table.handle([StateMessage(1, "e", 0, state(0.2), None, False, None, (0, 0))])[0]
    assert answer.code is None
    bad = table.handle([StateMessage(1, "e", 1, state(0.2), 1.0, False, None, (7, 0))])[0]
    assert bad.code == ErrorCode.BAD_MESSAGE and "actor_id" in decode(bad)["error"]["message"]


@pytest.mark.parametrize("action", [np.int64(1), 3, np.array([0.5, -1.0], dtype=np.float32),
                                    {"a": np.int64(2), "b": np.array([1, 0])}, [np.float32(0.25)]])
@pytest.mark.parametrize("version", [None, 3])
@pytest.mark.parametrize("worker", [None, "vm-12-abcdef"])
def test_the_fast_reply_encoder_matches_the_protocol(action: Any, version: int | None,
                                                     worker: str | None) -> None:
    extra: dict[str, Any] = {"policy_version": version}
    if worker is not None:
        extra["worker"] = worker
    for episode, seq in (("e", 7), ("é" * 128, 2**40)):  # and long strings, big numbers
        assert encode_action_reply(episode, seq, action, worker, version) == \
            encode_reply(Reply(episode, seq, to_wire_action(action), extra=extra))


@pytest.mark.parametrize(("episodes_and_seqs", "expected"), [
    ([("a", 0), ("b", 0)], [[0, 1]]),
    ([("a", 1), ("a", 0), ("b", 5)], [[1, 2], [0]]),
    ([("a", 2), ("a", 1), ("a", 0)], [[2], [1], [0]]),
])
def test_rounds_hold_one_state_per_episode_in_seq_order(episodes_and_seqs: list[tuple[str, int]],
                                                        expected: list[list[int]]) -> None:
    messages = [msg(episode, seq) for episode, seq in episodes_and_seqs]
    assert rounds(messages) == expected


def test_finished_episodes_merge_into_a_run_total() -> None:
    table = make_table()
    for episode in ("a", "b"):
        table.handle([StateMessage(1, episode, 0, [0.0] * 4, None, False)])
        table.handle([StateMessage(1, episode, 1, [0.0] * 4, 1.0, True)])
    first = table.finished.take()
    table.handle([StateMessage(1, "c", 0, [0.0] * 4, None, False)])
    table.handle([StateMessage(1, "c", 1, [0.0] * 4, 1.0, False)])
    table.close_all()
    run = FinishedEpisodes()
    run.merge(first)
    run.merge(table.finished.take())
    assert run.total == 3 and run.by_reason == {"done": 2, "shutdown": 1}
    assert run.returns.count == first.returns.count + 1
