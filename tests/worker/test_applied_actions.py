"""Applied actions, truncation and recorded steps in the episode table, without a broker.

A reported ``applied_action`` is checked against the action space before anything steps, compared with the
previous reply (the shadow-mode agreement) and recorded beside the policy's proposal; the wire keeps
``truncated`` and ``applied_action`` optional.
"""

import sys
from pathlib import Path
from typing import Any

import msgpack
import numpy as np
import pytest
from gymnasium import spaces

from maze_engine.wrappers.wrapper import ActionWrapper
from worker.episodes.recording import Recording
from worker.episodes.spaces import ServedSpaces
from worker.episodes.table import EpisodeTable
from worker.experience.buffer import Chunk
from worker.experience.recorder import Recorder
from worker.serving.factory import build_factory
from worker.settings import EpisodeSettings, ExperienceSettings
from worker.wire.protocol import DecodeError, ErrorCode, StateMessage, decode_state, encode_state

sys.path.insert(0, str(Path(__file__).parent))
from worker_harness import CARTPOLE, SignPolicy, state  # noqa: E402

RANDOM = {"_target_": "maze_engine.RandomPolicy", "seed": 0}


def make_table(policy: Any = None, recorder: Any = None, shadow: bool = False,
               agreement: list[tuple[Any, Any]] | None = None) -> EpisodeTable:
    factory = build_factory(policy if policy is not None else SignPolicy(), CARTPOLE)
    hook = None if agreement is None else (lambda version, agreed: agreement.append((version, agreed)))
    return EpisodeTable(factory, EpisodeSettings(),
                        recording=Recording(ServedSpaces.of(factory), recorder, hook, shadow))


def msg(episode: str, seq: int, first: float = 0.1, done: bool = False, applied: Any = None,
        truncated: bool = False) -> StateMessage:
    return StateMessage(1, episode, seq, state(first), None if seq == 0 else 1.0, done, None, None, truncated,
                        applied)


def reply(answer: Any) -> dict[str, Any]:
    return msgpack.unpackb(answer.body)


# ------------------------------------------------------------------------------------------------- the wire

def test_truncated_and_applied_action_round_trip_and_stay_optional() -> None:
    message = StateMessage(1, "e", 3, [0.1, 0.2, 0.3, 0.4], 1.0, True, None, None, True, {"move": [1, 2]})
    decoded = decode_state(encode_state(message))
    assert decoded.truncated is True and decoded.applied_action == {"move": [1, 2]}
    plain = decode_state(encode_state(StateMessage(1, "e", 0, [0.1], None, False)))
    assert plain.truncated is False and plain.applied_action is None
    assert b"truncated" not in encode_state(StateMessage(1, "e", 0, [0.1], None, False))


@pytest.mark.parametrize(("extra", "field"), [({"truncated": 1, "done": True}, "truncated"),
                                              ({"truncated": True, "done": False}, "truncated"),
                                              ({"applied_action": [[[[1]]]]}, None)])
def test_truncated_is_checked_and_applied_action_passes_the_wire_as_sent(extra: dict[str, Any],
                                                                         field: str | None) -> None:
    body = {"v": 1, "episode": "e", "seq": 1, "state": [0.1], "reward": 1.0, "done": False, **extra}
    if field is None:
        assert decode_state(msgpack.packb(body)).applied_action == [[[[1]]]]
        return
    with pytest.raises(DecodeError) as caught:
        decode_state(msgpack.packb(body))
    assert caught.value.field == field


# --------------------------------------------------------------------------------------- checked and compared

@pytest.mark.parametrize("applied", [2, -1, True, 1.5, [1], {"action": 1}, "left"])
def test_an_applied_action_outside_the_space_is_bad_message_naming_it(applied: Any) -> None:
    table = make_table()
    table.handle([msg("e", 0)])
    answer = table.handle([msg("e", 1, applied=applied)])[0]
    assert answer.code == ErrorCode.BAD_MESSAGE
    assert reply(answer)["error"]["message"].startswith("applied_action")
    # The episode is unchanged: the same step with a good applied action goes through.
    assert table.handle([msg("e", 1, applied=1)])[0].code is None


def test_a_bad_applied_action_on_the_first_state_leaves_no_episode() -> None:
    table = make_table()
    assert table.handle([msg("e", 0, applied=7)])[0].code == ErrorCode.BAD_MESSAGE
    assert "e" not in table
    assert table.handle([msg("e", 0)])[0].code is None


def test_a_bad_applied_action_on_the_done_state_is_named_and_the_episode_stays() -> None:
    table = make_table()
    table.handle([msg("e", 0)])
    assert table.handle([msg("e", 1, done=True, applied=9)])[0].code == ErrorCode.BAD_MESSAGE
    assert "e" in table


def test_agreement_compares_the_previous_reply_with_the_applied_action() -> None:
    agreement: list[tuple[Any, Any]] = []
    table = make_table(agreement=agreement)
    table.handle([msg("e", 0, first=0.5)])  # SignPolicy proposes 1
    table.handle([msg("e", 1, first=-0.5, applied=1)])  # agreed; proposes 0
    table.handle([msg("e", 2, first=0.5, applied=1)])  # disagreed; proposes 1
    table.handle([msg("e", 3, first=0.5)])  # not reported: nothing counted outside shadow mode
    table.handle([msg("e", 4, done=True, applied=1)])
    assert agreement == [(None, True), (None, False), (None, True)]


def test_shadow_mode_counts_unreported_applied_actions() -> None:
    agreement: list[tuple[Any, Any]] = []
    table = make_table(agreement=agreement, shadow=True)
    table.handle([msg("e", 0)])
    table.handle([msg("e", 1)])
    assert agreement == [(None, None)]


# ------------------------------------------------------------------------------------------------- recorded

def recorded_table(chunk_steps: int = 1000, sample: float = 1.0,
                   chunks: list[Chunk] | None = None) -> tuple[EpisodeTable, list[Chunk]]:
    chunks = [] if chunks is None else chunks
    settings = ExperienceSettings(record=True, chunk_steps=chunk_steps, sample=sample)
    recorder = Recorder(settings, chunks.append)
    return make_table(RANDOM, recorder), chunks


def test_a_recorded_episode_holds_observations_proposals_log_probs_and_applied_actions() -> None:
    table, chunks = recorded_table()
    states = [state(0.01 * seq) for seq in range(4)]
    actions = []
    for seq in range(3):
        message = StateMessage(1, "e", seq, states[seq], None if seq == 0 else float(seq), False, None, None,
                               False, 0 if seq == 2 else None)
        actions.append(reply(table.handle([message])[0])["action"])
    table.handle([StateMessage(1, "e", 3, states[3], 3.0, True, None, None, True, None)])
    assert len(chunks) == 1
    record = chunks[0].record("w1", "RandomPolicy", "act", 123.0)
    assert (record.chunk, record.final, record.end, record.steps, record.first_seq) == \
        (0, True, "truncated", 3, 0)
    columns = record.columns
    assert columns is not None
    np.testing.assert_allclose(columns["observation"]["observation"], np.array(states[:3], dtype=np.float32))
    np.testing.assert_allclose(record.final_observation["observation"], np.float32(states[3]))
    assert columns["action"]["action"].tolist() == actions
    np.testing.assert_allclose(columns["log_prob"], [np.log(0.5)] * 3)
    assert columns["applied_action"]["action"].tolist() == [actions[0], 0, actions[2]]
    assert columns["applied_reported"].tolist() == [False, True, False]
    assert columns["reward"].tolist() == [1.0, 2.0, 3.0]
    assert columns["terminated"].tolist() == [False, False, False]
    assert columns["truncated"].tolist() == [False, False, True]
    assert columns["seq"].tolist() == [0, 1, 2] and columns["time"].shape == (3,)


def test_long_episodes_leave_in_chunks_and_closed_ones_end_with_their_reason() -> None:
    table, chunks = recorded_table(chunk_steps=2)
    for seq in range(6):
        table.handle([msg("e", seq)])
    assert [chunk.steps for chunk in chunks] == [2, 2]
    table.close_all()
    final = chunks[-1]
    assert (final.final, final.end, final.steps, final.chunk) == (True, "shutdown", 1, 2)
    assert final.final_observation is not None  # the observation of the last state, its outcome unknown


def test_sampling_is_decided_by_the_episode_id() -> None:
    table, chunks = recorded_table(sample=0.5)
    for number in range(200):
        table.handle([msg(f"e{number}", 0)])
        table.handle([msg(f"e{number}", 1, done=True)])
    again, chunks_again = recorded_table(sample=0.5)
    for number in range(200):
        again.handle([msg(f"e{number}", 0)])
        again.handle([msg(f"e{number}", 1, done=True)])
    recorded = {chunk.episode for chunk in chunks}
    assert recorded == {chunk.episode for chunk in chunks_again}
    assert 60 < len(recorded) < 140


def test_a_handed_over_episode_carries_its_unpublished_steps_to_the_new_table() -> None:
    old, chunks = recorded_table(chunk_steps=3)
    new = recorded_table(chunk_steps=3, chunks=chunks)[0]
    for seq in range(5):
        old.handle([msg("e", seq)])
    (record,) = old.export(["e"])
    assert record.experience is not None
    replayed = new.source_for(None).create()
    from worker.episodes.handoff import replay

    assert new.adopt(record, replay(record, replayed))
    for seq in range(5, 8):
        new.handle([msg("e", seq)])
    new.handle([msg("e", 8, done=True)])
    assert [chunk.chunk for chunk in chunks] == [0, 1, 2]
    assert len({chunk.run for chunk in chunks}) == 1
    seqs = [seq for chunk in chunks for seq in chunk.lists["seqs"]]
    assert seqs == list(range(8)) and chunks[-1].end == "done"


class RenamedActionWrapper(ActionWrapper):
    """The policy answers ``{"push": a}``, the env takes ``{"action": a}``: the stack changed the space."""

    @property
    def action_spaces_dict(self) -> dict[Any, Any]:
        return {0: spaces.Dict({"push": spaces.Discrete(2)})}

    def action(self, action: dict[str, Any]) -> dict[str, Any]:
        return {"action": action["push"]}


class PushPolicy(SignPolicy):
    def compute_action(self, observation: dict[str, Any], actor_id: Any = None,
                       deterministic: bool = False) -> dict[str, Any]:
        return {"push": super().compute_action(observation, actor_id, deterministic)["action"]}


def test_with_an_action_space_changed_by_wrappers_the_proposal_stands_in_for_the_applied_action() -> None:
    chunks: list[Chunk] = []
    factory = build_factory(PushPolicy(), CARTPOLE, [RenamedActionWrapper])
    recorder = Recorder(ExperienceSettings(record=True), chunks.append)
    agreement: list[tuple[Any, Any]] = []
    table = EpisodeTable(factory, EpisodeSettings(), recording=Recording(
        ServedSpaces.of(factory), recorder, lambda version, agreed: agreement.append((version, agreed))))
    table.handle([msg("e", 0, first=0.5)])
    assert table.handle([msg("e", 1, first=0.5, applied=0)])[0].code is None  # checked on the wire
    assert table.handle([msg("e", 2, applied=5)])[0].code == ErrorCode.BAD_MESSAGE
    table.handle([msg("e", 2, done=True)])
    columns = chunks[0].record("w", "p", "act", 0.0).columns
    assert columns is not None
    assert columns["applied_reported"].tolist() == [False, False]
    assert columns["applied_action"]["push"].tolist() == columns["action"]["push"].tolist() == [1, 1]
    assert agreement == [(None, False)]  # compared as the actions travel
