"""The experience record format: codec, chunks, hand-off of recorded steps, stitching runs, sampling, and the
Minari episodes made of them (no broker)."""

import math
import time
import uuid
from typing import Any

import numpy as np
import pytest
from gymnasium import spaces

from worker.experience.buffer import Chunk, RunBuffer, adopt_buffer
from worker.experience.export import ExportError, dataset_path, to_buffer
from worker.experience.reader import Stitcher
from worker.experience.record import (
    STEP_COLUMNS,
    ExperienceRecord,
    RecordError,
    decode_record,
    encode_record,
)
from worker.experience.recorder import sampled

OBSERVATION_SPACE = spaces.Dict({"observation": spaces.Box(-np.inf, np.inf, (4,), np.float32)})


def play(buffer: RunBuffer, seqs: range, rng: np.random.Generator) -> None:
    for seq in seqs:
        buffer.act(seq, {"observation": rng.normal(size=4).astype(np.float32)}, {"action": np.int64(seq % 2)},
                   -0.5, None if seq == 0 else 1.0, None, time.time())


def records_of(chunks: list[Chunk], worker: str = "w1") -> list[ExperienceRecord]:
    return [decode_record(encode_record(chunk.record(worker, "TorchPolicy", "shadow", 1.5)))
            for chunk in chunks]


def test_a_record_round_trips_with_every_documented_field() -> None:
    chunks: list[Chunk] = []
    buffer = RunBuffer(chunks.append, 100, "run1", "episode-1", 7, None)
    play(buffer, range(5), np.random.default_rng(0))
    buffer.finish(1.0, {"action": np.int64(0)}, False, {"observation": np.zeros(4, np.float32)}, time.time())
    (record,) = records_of(chunks)
    assert (record.run, record.episode, record.chunk, record.final, record.end) == \
        ("run1", "episode-1", 0, True, "done")
    assert (record.worker, record.policy_name, record.policy_version, record.mode) == \
        ("w1", "TorchPolicy", 7, "shadow")
    assert (record.first_seq, record.steps, record.resumed_at, record.published) == (0, 5, None, 1.5)
    assert record.columns is not None and set(record.columns) == set(STEP_COLUMNS)
    assert record.columns["observation"]["observation"].dtype == np.float32
    assert record.columns["observation"]["observation"].shape == (5, 4)
    assert record.columns["applied_action"]["action"].tolist() == [0, 1, 0, 1, 0]
    assert record.columns["applied_reported"].tolist() == [False] * 4 + [True]
    assert record.columns["terminated"].tolist() == [False] * 4 + [True]
    assert record.final_observation["observation"].shape == (4,)


@pytest.mark.parametrize(("change", "field"), [({"kind": "other"}, "kind"), ({"v": 2}, "v"),
                                                ({"chunk": "0"}, "chunk"), ({"policy": None}, "policy"),
                                                ({"steps": 3, "columns": None}, "columns")])
def test_a_bad_record_is_refused_naming_the_field(change: dict[str, Any], field: str) -> None:
    import msgpack

    from worker.experience.record import pack, unpack

    chunks: list[Chunk] = []
    buffer = RunBuffer(chunks.append, 100, "run1", "e", None, None)
    play(buffer, range(2), np.random.default_rng(0))
    buffer.abandon("idle")
    body = unpack(encode_record(chunks[0].record("w", "p", "act", 0.0)))
    body.update(change)
    with pytest.raises(RecordError, match=f"^{field}"):
        decode_record(pack(body))
    with pytest.raises(RecordError, match="^body"):
        decode_record(msgpack.packb([1, 2]) + b"\xc1")


def test_an_episode_without_steps_publishes_nothing() -> None:
    chunks: list[Chunk] = []
    buffer = RunBuffer(chunks.append, 100, "run1", "e", None, None)
    buffer.finish(None, None, False, None, time.time())
    RunBuffer(chunks.append, 100, "run2", "e", None, None).abandon("idle")
    assert chunks == []


def test_exported_steps_continue_in_another_buffer_as_one_run() -> None:
    chunks: list[Chunk] = []
    rng = np.random.default_rng(1)
    first = RunBuffer(chunks.append, 3, "run1", "e", 2, None)
    play(first, range(5), rng)  # one chunk of 3 published, 1 completed + 1 pending travel
    second = adopt_buffer(first.export(), chunks.append, 3, "e")
    play(second, range(5, 9), rng)
    second.finish(1.0, None, True, {"observation": np.ones(4, np.float32)}, time.time())
    records = records_of(chunks[:1], "w1") + records_of(chunks[1:], "w2")
    stitcher = Stitcher()
    joined = [stitcher.add(record) for record in reversed(records)]  # arrival order does not matter
    episode = joined[-1]
    assert joined[:-1] == [None] * (len(records) - 1) and episode is not None
    assert episode.columns is not None and episode.columns["seq"].tolist() == list(range(9))
    assert episode.workers == ["w1", "w2", "w2"] and episode.end == "truncated"
    assert episode.columns["observation"]["observation"].dtype == np.float32
    assert stitcher.add(records[0]) is None and stitcher.duplicates == 1


def test_a_shadow_candidates_steps_travel_and_join_beside_the_served_ones() -> None:
    """Its action and its log-probability of the served action are columns of the chunks where it acted; a
    chunk where it dropped out (a failed shadow) leaves its action column out of the joined episode."""
    chunks: list[Chunk] = []
    first = RunBuffer(chunks.append, 3, "run1", "e", 2, None)
    for seq in range(5):
        first.act(seq, {"observation": np.zeros(4, np.float32)}, {"action": np.int64(1)}, -0.7,
                  None if seq == 0 else 1.0, None, time.time(), (7, {"action": np.int64(0)}, -2.0 - seq))
    second = adopt_buffer(first.export(), chunks.append, 3, "e")  # a completed and a pending step travel
    second.act(5, {"observation": np.zeros(4, np.float32)}, {"action": np.int64(1)}, -0.7, 1.0, None,
               time.time())  # the shadow failed: no shadow side from here on
    second.finish(1.0, None, False, {"observation": np.ones(4, np.float32)}, time.time())
    records = records_of(chunks)
    assert [record.shadow_version for record in records] == [7, 7]
    assert records[0].columns is not None and records[0].columns["shadow_log_prob"].tolist() == [-2, -3, -4]
    assert records[0].columns["shadow_action"]["action"].tolist() == [0, 0, 0]
    tail = records[1].columns
    assert tail is not None and "shadow_action" not in tail
    assert tail["shadow_log_prob"][:2].tolist() == [-5, -6]
    assert math.isnan(tail["shadow_log_prob"][2])
    stitcher = Stitcher()
    episode = [stitcher.add(record) for record in records][-1]
    assert episode is not None and episode.columns is not None and "shadow_action" not in episode.columns
    assert episode.columns["shadow_log_prob"][:5].tolist() == [-2, -3, -4, -5, -6]


def test_a_run_with_a_gap_is_not_joined() -> None:
    chunks: list[Chunk] = []
    buffer = RunBuffer(chunks.append, 2, "run1", "e", None, None)
    play(buffer, range(3), np.random.default_rng(0))
    play(buffer, range(5, 8), np.random.default_rng(0))
    buffer.abandon("idle")
    stitcher = Stitcher()
    assert [stitcher.add(record) for record in records_of(chunks)][-1] is None
    assert stitcher.broken == 1


def test_sampling_is_a_stable_fraction_of_episode_ids() -> None:
    ids = [uuid.UUID(int=number).hex for number in range(4000)]
    chosen = [episode for episode in ids if sampled(episode, 0.25)]
    assert 850 < len(chosen) < 1150
    assert chosen == [episode for episode in ids if sampled(episode, 0.25)]
    assert all(sampled(episode, 1.0) for episode in ids[:10]) and not any(sampled(e, 0.0) for e in ids[:10])


def test_a_recorded_episode_becomes_a_minari_episode_of_applied_actions() -> None:
    chunks: list[Chunk] = []
    buffer = RunBuffer(chunks.append, 100, "run1", "e", None, None)
    play(buffer, range(4), np.random.default_rng(0))
    buffer.finish(2.0, {"action": np.int64(1)}, False, {"observation": np.ones(4, np.float32)}, time.time())
    stitcher = Stitcher()
    (episode,) = [joined for joined in map(stitcher.add, records_of(chunks)) if joined is not None]
    minari_episode = to_buffer(episode, OBSERVATION_SPACE)
    assert minari_episode.observations["observation"].shape == (5, 4)
    assert minari_episode.actions["action"].tolist() == [0, 1, 0, 1]
    assert minari_episode.rewards.tolist() == [1.0, 1.0, 1.0, 2.0]
    assert minari_episode.terminations.tolist() == [False, False, False, True]
    assert minari_episode.infos["proposed_action"]["action"].tolist() == [0, 1, 0, 1, 1]
    assert math.isnan(minari_episode.infos["log_prob"][-1])
    assert minari_episode.infos["applied_reported"].tolist() == [False, False, False, True, False]


def test_an_episode_closed_without_done_ends_truncated_at_its_last_observation() -> None:
    chunks: list[Chunk] = []
    buffer = RunBuffer(chunks.append, 100, "run1", "e", None, None)
    play(buffer, range(4), np.random.default_rng(0))
    buffer.abandon("idle")
    (episode,) = [joined for joined in map(Stitcher().add, records_of(chunks)) if joined is not None]
    minari_episode = to_buffer(episode, OBSERVATION_SPACE)
    assert minari_episode.observations["observation"].shape == (4, 4)
    assert minari_episode.truncations.tolist() == [False, False, True]


def test_dataset_ids_follow_minari(tmp_path: Any) -> None:
    assert dataset_path(tmp_path, "cartpole/line7-v0") == tmp_path / "cartpole/line7-v0" / "data"
    for bad in ("no-version", "x/y-v0", "a b-v1"):
        with pytest.raises(ExportError, match="--dataset-id"):
            dataset_path(tmp_path, bad)


def test_from_takes_the_stream_offsets_and_iso_times() -> None:
    import datetime

    from worker.broker.stream import offset_argument

    starts = ("first", "last", "next", "42")
    assert [offset_argument(start) for start in starts] == ["first", "last", "next", 42]
    assert offset_argument("2026-05-01T10:00:00") == datetime.datetime(2026, 5, 1, 10, tzinfo=datetime.UTC)
    assert offset_argument("2026-05-01T10:00:00+02:00").utcoffset() == datetime.timedelta(hours=2)
    with pytest.raises(ValueError, match="^--from: expected first, last, next"):
        offset_argument("yesterday")
