"""Hand-off records: exact encoding, replay restoring the wrapper stack, export and adopt, lost episodes."""

import gc
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgpack
import numpy as np
import pytest

from worker.episodes.handoff import (
    EpisodeRecord,
    HandoffError,
    History,
    Step,
    decode_records,
    encode_encodable_records,
    encode_records,
    replay,
)
from worker.episodes.table import EpisodeTable
from worker.serving.factory import build_factory
from worker.settings import EpisodeSettings
from worker.wire.protocol import ErrorCode, StateMessage

sys.path.insert(0, str(Path(__file__).parent))
from cluster_harness import StepPatternWrapper, expected  # noqa: E402
from worker_harness import CARTPOLE, SignPolicy  # noqa: E402

WRAPPERS = [{"_target_": StepPatternWrapper}]


def table(on_lost: str = "resume", worker: str | None = "w1",
          lost_check: Callable[[StateMessage], bool] | None = None) -> EpisodeTable:
    return EpisodeTable(build_factory(SignPolicy(), CARTPOLE, WRAPPERS),
                        EpisodeSettings(replay_window=4, on_lost=on_lost), worker_id=worker,
                        lost_check=lost_check)


def state(seq: int) -> list[float]:
    return [0.01 * seq, 0.0, -0.01, 0.02]


def msg(episode: str, seq: int, done: bool = False) -> StateMessage:
    return StateMessage(1, episode, seq, state(seq), None if seq == 0 else 1.0, done, None, None)


def reply(answer: Any) -> dict[str, Any]:
    return msgpack.unpackb(answer.body)


def test_records_round_trip_exactly() -> None:
    record = EpisodeRecord("ep-1", 2, {1: b"one", 2: b"two"}, [
        Step(np.arange(6, dtype=np.float32).reshape(2, 3), None, {"k": [1, 2]}, None,
             [{"action": np.int64(1)}]),
        Step({"pos": np.array([1.5, -2.0]), "id": 7}, 0.5, None, (0, 1),
             [{"a": np.float32(0.25), "b": (1, np.array([True, False]))}, {"a": 3}]),
    ])
    message = decode_records(encode_records(3, "w1", [record]))
    assert (message.shard, message.worker) == (3, "w1")
    [back] = message.records
    assert back.episode == "ep-1" and back.last_seq == 2 and back.replies == record.replies
    first, second = back.steps
    np.testing.assert_array_equal(first.state, record.steps[0].state)
    assert first.state.dtype == np.float32 and first.info == {"k": [1, 2]} and first.actor is None
    assert type(first.actions[0]["action"]) is np.int64
    assert second.actor == (0, 1) and second.reward == 0.5
    assert type(second.actions[0]["a"]) is np.float32 and second.actions[0]["a"] == np.float32(0.25)
    assert isinstance(second.actions[0]["b"], tuple)
    np.testing.assert_array_equal(second.actions[0]["b"][1], [True, False])


def test_a_history_that_cannot_be_encoded_names_the_episode() -> None:
    record = EpisodeRecord("ep-odd", 0, {}, [Step({1, 2}, None, None, None, [])])
    with pytest.raises(HandoffError, match="^episode ep-odd: its history cannot be encoded"):
        encode_records(0, "w1", [record])


def test_records_that_cannot_be_encoded_stay_behind_and_the_others_go() -> None:
    good = EpisodeRecord("ep-good", 0, {}, [Step([0.0], None, None, None, [{"action": 1}])])
    bad = EpisodeRecord("ep-odd", 0, {}, [Step({1, 2}, None, None, None, [])])
    body = encode_encodable_records(2, "w1", [bad, good])
    assert body is not None and [record.episode for record in decode_records(body).records] == ["ep-good"]
    assert encode_encodable_records(2, "w1", [bad]) is None


@pytest.mark.parametrize(("body", "field"), [(b"\xc1", "body"), (msgpack.packb([1]), "v"),
                                             (msgpack.packb({"v": 1, "shard": -1}), "shard"),
                                             (msgpack.packb({"v": 1, "shard": 0, "worker": "w",
                                                             "episodes": [{"episode": "e"}]}), "episodes")])
def test_unreadable_messages_raise_handoff_errors(body: bytes, field: str) -> None:
    with pytest.raises(HandoffError, match=f"^{field}"):
        decode_records(body)


def drive(episodes: EpisodeTable, episode: str, seqs: range) -> list[dict[str, Any]]:
    return [reply(episodes.handle([msg(episode, seq)])[0]) for seq in seqs]


def test_a_moved_episode_goes_on_as_if_it_had_not_moved() -> None:
    old, new, control = table(worker="old"), table(worker="new"), table(worker="control")
    drive(old, "e", range(7))
    baseline = drive(control, "e", range(12))
    [record] = decode_records(encode_records(0, "old", old.export(["e"]))).records
    assert "e" not in old and record.last_seq == 6 and len(record.steps) == 7
    assert new.adopt(record, replay(record, new.factory.create()))
    # A redelivered state is answered from the moved replay window, with the old worker's reply.
    assert reply(new.handle([msg("e", 6)])[0]) == {**baseline[6], "worker": "old"}
    moved = drive(new, "e", range(7, 12))
    for seq, answer in zip(range(7, 12), moved, strict=True):
        assert answer["action"] == baseline[seq]["action"] == expected(seq)
        assert answer["worker"] == "new"
    # Statistics too: the moved episode's return and length are those of an unmoved one.
    new.handle([msg("e", 12, done=True)])
    control.handle([msg("e", 12, done=True)])
    assert new.finished.take().returns.summary() == control.finished.take().returns.summary()


def test_histories_give_back_what_they_recorded_and_leave_the_garbage_collector_alone() -> None:
    actions = [{"action": np.int64(1)}, (2, 3), {"a": np.float32(0.5), "b": np.zeros(2)}]
    history = History()
    for seq in range(8):
        history.record(state(seq), 1.0, None if seq else {"k": 1}, (0, 1), actions[:seq % 4])
    steps = history.steps()
    assert len(steps) == 8
    assert [step.state for step in steps] == [state(seq) for seq in range(8)]
    assert all(type(step.state) is list for step in steps)
    assert [len(step.actions) for step in steps] == [0, 1, 2, 3, 0, 1, 2, 3]
    assert steps[3].actions[:2] == [{"action": 1}, (2, 3)] and steps[0].info == {"k": 1}
    assert History(steps).steps() == steps
    # Every tracked step would make each full collection walk every step of every open episode.
    gc.collect()
    [recorded] = [referent for referent in gc.get_referents(history) if type(referent) is list]
    assert len(recorded) > 8 * 5 and [item for item in recorded if gc.is_tracked(item)] == []


def test_moved_histories_give_back_the_states_as_sent() -> None:
    old = table(worker="old")
    drive(old, "e", range(5))
    [moved] = decode_records(encode_records(0, "old", old.export(["e"]))).records
    assert [step.state for step in moved.steps] == [state(seq) for seq in range(5)]
    assert all(type(step.state) is list and type(step.actions) is list for step in moved.steps)


def test_adopt_keeps_the_newer_copy() -> None:
    first, second = table(), table()
    drive(first, "e", range(5))
    drive(second, "e", range(3))
    [stale] = second.export(["e"])
    assert not first.adopt(stale, replay(stale, first.factory.create()))
    assert reply(first.handle([msg("e", 5)])[0])["action"] == expected(5)


def test_replay_that_runs_out_of_actions_fails_cleanly() -> None:
    episodes = table()
    drive(episodes, "e", range(3))
    [record] = episodes.export(["e"])
    record.steps[1] = record.steps[1]._replace(actions=[])
    with pytest.raises(HandoffError, match="^episode e: step 1 needs more policy actions"):
        replay(record, episodes.factory.create())


def test_lost_episodes_resume_or_error_as_configured() -> None:
    def lost(message: StateMessage) -> bool:
        return message.episode.startswith("lost")

    resuming, failing = table("resume", lost_check=lost), table("error", lost_check=lost)
    # Not explained by a failover: unknown as before.
    assert resuming.handle([msg("stray", 4)])[0].code == ErrorCode.UNKNOWN_EPISODE
    answer = reply(resuming.handle([msg("lost-1", 4)])[0])
    assert answer["resumed"] is True and answer["error"] is None and answer["action"] == expected(0)
    # From there on it is an ordinary episode on a fresh stack: counting from the resumed seq.
    follow = reply(resuming.handle([msg("lost-1", 5)])[0])
    assert "resumed" not in follow and follow["action"] == expected(1)
    assert failing.handle([msg("lost-2", 4)])[0].code == ErrorCode.EPISODE_LOST
    # An episode the worker remembers finishing stays unknown, whatever its shard.
    drive(resuming, "lost-3", range(2))
    resuming.handle([msg("lost-3", 2, done=True)])
    assert resuming.handle([msg("lost-3", 3)])[0].code == ErrorCode.UNKNOWN_EPISODE


def test_reply_fields_resumed_and_worker_decode_and_are_checked() -> None:
    from worker.wire.protocol import DecodeError
    from worker.wire.replies import decode_reply

    first = decode_reply(table().handle([msg("e", 0)])[0].body)
    assert first.worker == "w1" and not first.resumed
    base = {"v": 1, "episode": "e", "seq": 3, "action": 1, "error": None}
    assert decode_reply(msgpack.packb({**base, "resumed": True})).resumed
    for extra, field in [({"resumed": 1}, "resumed"), ({"worker": 7}, "worker")]:
        with pytest.raises(DecodeError) as caught:
            decode_reply(msgpack.packb({**base, **extra}))
        assert caught.value.field == field


class _Versioned:
    """A deployment source that says which published version it serves (as VersionedFactory does)."""

    def __init__(self, version: int) -> None:
        self.inner = build_factory(SignPolicy(), CARTPOLE, WRAPPERS)
        self.policy = self.inner.policy
        self.policy_version = version

    def create(self) -> Any:
        return self.inner.create()


def test_a_moved_episode_keeps_its_policy_version() -> None:
    old = EpisodeTable(_Versioned(1), EpisodeSettings(replay_window=4))
    drive(old, "e", range(3))
    [record] = decode_records(encode_records(0, "old", old.export(["e"]))).records
    assert record.policy_version == 1
    # The new owner already serves version 2 to new episodes; it builds version 1 for the moved one.
    built: list[int] = []

    def build(version: int) -> _Versioned:
        built.append(version)
        return _Versioned(version)

    new = EpisodeTable(_Versioned(2), EpisodeSettings(replay_window=4), version_source=build)
    source = new.source_for(record.policy_version)
    assert built == [1] and getattr(source, "policy_version", None) == 1
    assert new.adopt(record, replay(record, source.create()), source)
    assert reply(new.handle([msg("e", 3)])[0])["policy_version"] == 1
    assert reply(new.handle([msg("f", 0)])[0])["policy_version"] == 2
    # A second episode on version 1 reuses the source the first one holds.
    assert new.source_for(1) is source and built == [1]


def test_a_moved_episode_whose_version_is_gone_goes_on_with_the_current_one() -> None:
    def missing(version: int) -> Any:
        raise FileNotFoundError(f"version {version} was deleted")

    new = EpisodeTable(_Versioned(2), EpisodeSettings(replay_window=4), version_source=missing)
    assert new.source_for(1) is new.factory and new.source_for(None) is new.factory


def test_a_history_past_its_byte_budget_is_dropped_and_the_episode_stays() -> None:
    episodes = EpisodeTable(build_factory(SignPolicy(), CARTPOLE, WRAPPERS),
                            EpisodeSettings(replay_window=4, max_history_bytes=1000))
    def sized(episode: str, seq: int, size: int) -> StateMessage:
        return StateMessage(1, episode, seq, state(seq), None if seq == 0 else 1.0, size=size)

    big, small = [sized("big", seq, 400) for seq in range(3)], [sized("small", seq, 100) for seq in range(3)]
    for first, second in zip(big, small, strict=True):
        assert [answer.code for answer in episodes.handle([first, second])] == [None, None]
    # 1200 bytes of states: "big" keeps no history (memory stays bounded) and still steps here...
    assert reply(episodes.handle([StateMessage(1, "big", 3, state(3), 1.0)])[0])["error"] is None
    # ...but cannot move: exporting it hands over nothing, while "small" moves with its three steps.
    records = episodes.export(["big", "small"])
    assert [(record.episode, len(record.steps)) for record in records] == [("small", 3)]
    assert "big" not in episodes and "small" not in episodes
