"""Job messages v1: decoding names the field of every mistake; encoding round trips; results and control."""

import math
from typing import Any

import msgpack
import pytest

from worker.jobs.codec import (
    JobDecodeError,
    best_effort_job_id,
    decode_control,
    decode_event,
    decode_job,
    decode_result,
    encode_control,
    encode_event,
    encode_job,
    encode_result,
    new_job,
)
from worker.jobs.schema import ChunkOf, ControlMessage, JobError, JobKind, JobMessage, JobResult, JobStatus

GOOD: dict[str, Any] = {"v": 1, "job_id": "train-1", "kind": "train", "config": "conf_train",
                        "overrides": ["algorithm=a2c", "runner.n_envs=2"], "time_limit_s": 60,
                        "publish_policy": "cartpole"}


def body(**changes: Any) -> bytes:
    obj = {**GOOD, **changes}
    return msgpack.packb({key: value for key, value in obj.items() if value is not ...})


def test_a_valid_job_decodes_to_a_frozen_message() -> None:
    job = decode_job(body())
    assert job == JobMessage(job_id="train-1", kind=JobKind.TRAIN, config="conf_train",
                             overrides=("algorithm=a2c", "runner.n_envs=2"), time_limit_s=60.0,
                             publish_policy="cartpole")
    with pytest.raises(AttributeError):
        job.job_id = "other"  # type: ignore[misc]


def test_defaults_config_by_kind_and_optional_fields() -> None:
    job = decode_job(msgpack.packb({"v": 1, "job_id": "r", "kind": "rollout"}))
    assert (job.config, job.overrides, job.time_limit_s, job.publish_policy, job.chunks) == \
        ("conf_rollout", (), None, None, None)


@pytest.mark.parametrize(("changes", "field"), [
    ({"v": 2}, "v"),
    ({"v": True}, "v"),
    ({"job_id": ...}, "job_id"),
    ({"job_id": ""}, "job_id"),
    ({"job_id": "a/../b"}, "job_id"),
    ({"job_id": "has.dot"}, "job_id"),
    ({"job_id": "x" * 101}, "job_id"),
    ({"job_id": 7}, "job_id"),
    ({"kind": "explode"}, "kind"),
    ({"kind": ...}, "kind"),
    ({"config": "../etc"}, "config"),
    ({"config": 3}, "config"),
    ({"overrides": "algorithm=a2c"}, "overrides"),
    ({"overrides": ["ok=1", 5]}, "overrides[1]"),
    ({"overrides": ["ok=1", "  "]}, "overrides[1]"),
    ({"time_limit_s": -1}, "time_limit_s"),
    ({"time_limit_s": "60"}, "time_limit_s"),
    ({"time_limit_s": math.inf}, "time_limit_s"),
    ({"publish_policy": "a b"}, "publish_policy"),
    ({"publish_policy": ".."}, "publish_policy"),
    ({"publish_policy": "."}, "publish_policy"),
    ({"publish_policy": "a/b"}, "publish_policy"),
    ({"publish_policy": "-x"}, "publish_policy"),
    ({"publish_policy": "x" * 65}, "publish_policy"),
    ({"kind": "rollout", "config": None}, "publish_policy"),
    ({"chunks": 2}, "chunks"),
    ({"kind": "rollout", "publish_policy": None, "chunks": 0}, "chunks"),
    ({"kind": "rollout", "publish_policy": None, "chunks": 1.5}, "chunks"),
    ({"chunk_of": {"parent": "p", "index": 2, "count": 2}}, "chunk_of.index"),
    ({"chunk_of": {"parent": "p/x", "index": 0, "count": 2}}, "chunk_of.parent"),
    ({"chunk_of": []}, "chunk_of"),
])
def test_each_mistake_is_reported_with_its_field(changes: dict[str, Any], field: str) -> None:
    with pytest.raises(JobDecodeError) as info:
        decode_job(body(**changes))
    assert info.value.field == field
    assert info.value.message.startswith(field.split("[")[0])


@pytest.mark.parametrize("raw", [b"", b"\xc1", msgpack.packb([1, 2]), msgpack.packb("job"), b"\x81\xa1"])
def test_undecodable_bodies_name_the_body(raw: bytes) -> None:
    with pytest.raises(JobDecodeError) as info:
        decode_job(raw)
    assert info.value.field == "body"


def test_the_job_id_of_an_invalid_job_is_still_known() -> None:
    with pytest.raises(JobDecodeError) as info:
        decode_job(body(kind="explode"))
    assert info.value.job_id == "train-1"
    assert best_effort_job_id(body(kind="explode")) == "train-1"
    assert best_effort_job_id(b"\xc1") is None


def test_encode_round_trips_including_chunks() -> None:
    job = JobMessage("p_chunk-1-of-2", JobKind.ROLLOUT, "conf_rollout", ("runner.n_episodes=3",),
                     chunk_of=ChunkOf("p", 0, 2))
    assert decode_job(encode_job(job)) == job
    split = new_job("p", "rollout", ["seed=1"], chunks=4)
    assert decode_job(encode_job(split)).chunks == 4


def test_new_job_checks_like_the_worker() -> None:
    with pytest.raises(JobDecodeError) as info:
        new_job("bad id", "train")
    assert info.value.field == "job_id"


def test_results_round_trip_and_drop_non_finite_numbers() -> None:
    result = JobResult("j", "rollout", JobStatus.FAILED, "/a/jobs/j/output",
                       summary={"statistics": {"episode_return": {"mean": math.nan, "count": 0}}},
                       error=JobError("crashed", "boom"), attempts=3)
    decoded = decode_result(encode_result(result))
    assert decoded.status is JobStatus.FAILED and decoded.error == JobError("crashed", "boom")
    assert decoded.summary["statistics"]["episode_return"]["mean"] is None
    assert decoded.attempts == 3
    with pytest.raises(JobDecodeError) as info:
        decode_result(msgpack.packb({"job_id": "j", "status": "running"}))
    assert info.value.field == "status"


def test_events_and_control_messages() -> None:
    event = decode_event(encode_event("j", "epoch", epoch=2, stats={"x": math.inf}))  # type: ignore[arg-type]
    assert (event["job_id"], event["event"], event["epoch"], event["stats"]) == ("j", "epoch", 2, {"x": None})
    assert decode_control(encode_control(ControlMessage("cancel", "j", "why"))) == \
        ControlMessage("cancel", "j", "why")
    for obj, field in (({"v": 1, "command": "pause", "job_id": "j"}, "command"),
                       ({"v": 1, "command": "cancel"}, "job_id"),
                       ({"command": "cancel", "job_id": "j"}, "v")):
        with pytest.raises(JobDecodeError) as info:
            decode_control(msgpack.packb(obj))
        assert info.value.field == field
