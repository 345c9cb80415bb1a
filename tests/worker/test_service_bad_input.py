"""maze-worker against the real broker: every kind of bad input gets an error reply or a dead-letter.

The worker never goes down on bad input and keeps serving valid episodes afterwards; what cannot be answered
(no reply_to, a body that is not a msgpack map) lands in ``<prefix>.dead`` with the reason in its headers.
"""

import random
import sys
import uuid
from pathlib import Path
from typing import Any

import msgpack
import pytest

from worker.wire.protocol import CONTENT_TYPE, MAX_STATE_BYTES
from worker.wire.topology import (
    DEAD_DETAIL_HEADER,
    DEAD_FIELD_HEADER,
    DEAD_REASON_HEADER,
    DELIVERY_COUNT_HEADER,
    SHARD_DELIVERY_LIMIT,
    DeadReason,
)

sys.path.insert(0, str(Path(__file__).parent))
from worker_harness import Producer, running_worker, settings_for, state  # noqa: E402

pytestmark = pytest.mark.integration

VALID = {"v": 1, "episode": "e", "seq": 0, "state": [0.1, 0.0, 0.0, 0.0], "reward": None, "done": False,
         "info": None}


def _with(**changes: Any) -> bytes:
    body = {**VALID, **changes}
    return msgpack.packb({key: value for key, value in body.items() if value is not _DROP})


_DROP = object()


@pytest.fixture
def served(amqp_url: str, prefix: str) -> Any:
    with running_worker(settings_for(amqp_url, prefix)) as worker:
        producer = Producer(amqp_url, prefix)
        yield worker, producer
        # Whatever came before, the worker still serves a valid episode.
        assert producer.call("after", 0, state(0.2), reward=None)["action"] == 1
        assert producer.call("after", 1, state(-0.2))["action"] == 0
        producer.close()


@pytest.mark.parametrize(("body", "field", "echo"), [
    (_with(v=2), "v", ("e", 0)),
    (_with(v=_DROP), "v", ("e", 0)),
    (_with(episode=_DROP), "episode", (None, 0)),
    (_with(episode=7), "episode", (None, 0)),
    (_with(episode="x" * 129), "episode", (None, 0)),
    (_with(seq=-1), "seq", ("e", None)),
    (_with(seq="0"), "seq", ("e", None)),
    (_with(state=_DROP), "state", ("e", 0)),
    (_with(reward="1"), "reward", ("e", 0)),
    (_with(done=_DROP), "done", ("e", 0)),
    (_with(done=1), "done", ("e", 0)),
    (_with(info=[1]), "info", ("e", 0)),
    (_with(actor=[0]), "actor", ("e", 0)),
    (_with(state=[0.1, 0.2]), "state", ("e", 0)),
    (_with(state={"x": 1}), "state", ("e", 0)),
    (_with(state=[0.1, None, 0.0, 0.0]), "state", ("e", 0)),
], ids=["v=2", "no v", "no episode", "episode int", "episode too long", "seq negative", "seq string",
        "no state", "reward string", "no done", "done int", "info list", "actor short", "state short",
        "state map", "state with nil"])
def test_invalid_fields_get_bad_message_naming_the_field(served: Any, body: bytes, field: str,
                                                         echo: tuple[Any, Any]) -> None:
    _, producer = served
    reply = producer.wait([producer.publish(body, "e")])[0]
    assert reply["error"]["code"] == "bad_message", reply
    assert reply["error"]["message"].startswith(field), reply
    assert (reply["episode"], reply["seq"]) == echo
    assert reply["action"] is None


@pytest.mark.parametrize(("properties", "field"), [
    ({"content_type": "application/json"}, "content_type"),
    ({"correlation_id": ""}, "correlation_id"),
], ids=["json content type", "no correlation id"])
def test_unusable_properties_get_bad_message(served: Any, properties: dict[str, Any], field: str) -> None:
    _, producer = served
    before = producer.received
    producer.publish(_with(), "e", **properties)
    producer.pump(lambda: producer.received > before)
    reply = next(iter(producer.replies.values()))
    assert reply["error"]["code"] == "bad_message" and reply["error"]["message"].startswith(field)


def test_a_message_without_reply_to_is_dead_lettered_with_the_reason(served: Any) -> None:
    _, producer = served
    body = _with()
    correlation_id = producer.publish(body, "some-episode", reply_to=None)
    producer.pump(lambda: producer.dead_letter_count() >= 1)
    [(dead_properties, dead_body)] = producer.dead_letters()
    assert dead_body == body
    assert dead_properties.correlation_id == correlation_id
    headers = dead_properties.headers
    assert headers[DEAD_REASON_HEADER] == DeadReason.NO_REPLY_TO and headers[DEAD_FIELD_HEADER] == "reply_to"
    assert headers[DEAD_DETAIL_HEADER]
    assert producer.received == 0


@pytest.mark.parametrize(("body", "detail"), [
    (b"\xc1\xff not msgpack", "not a msgpack value"),
    (msgpack.packb([1, 2, 3]), "expected a msgpack map, got list"),
    (b"", "undecodable"),
    (_with()[:-3], "undecodable"),
], ids=["not msgpack", "not a map", "empty", "truncated"])
def test_undecodable_bodies_with_reply_to_are_answered_for_the_routing_key(served: Any, body: bytes,
                                                                           detail: str) -> None:
    _, producer = served
    reply = producer.wait([producer.publish(body, "some-episode")])[0]
    assert reply["error"]["code"] == "bad_message" and reply["error"]["message"].startswith("body: ")
    assert detail in reply["error"]["message"]
    assert (reply["episode"], reply["seq"], reply["action"]) == ("some-episode", None, None)
    assert producer.dead_letter_count() == 0


def _fuzz_body(rng: random.Random) -> bytes:
    kind = rng.randrange(6)
    if kind == 0:
        return rng.randbytes(rng.randrange(0, 64))
    if kind == 1:
        valid = _with(episode=f"f{rng.randrange(50)}", seq=rng.randrange(3))
        return valid[:rng.randrange(len(valid))]
    if kind == 2:
        return msgpack.packb(rng.choice([None, 5, -1.5, "text", [1, 2], True, b"raw"]))
    if kind == 3:
        key = rng.choice(list(VALID) + ["actor", "extra"])
        value = rng.choice([None, -1, 0, 2**40, 1.5, float("inf"), "s", [], {}, [0.1] * 4,
                            {"observation": [0.0] * 4}, True, b"\x00"])
        return msgpack.packb({**VALID, "episode": f"f{rng.randrange(50)}", key: value})
    if kind == 4:
        return msgpack.packb({rng.choice(["v", 1, "episode", b"k"]): rng.random()
                              for _ in range(rng.randrange(4))})
    # A msgpack extension that is not the ndarray encoding, or a corrupt ndarray.
    return msgpack.packb({**VALID, "state": msgpack.ExtType(rng.randrange(0, 5), rng.randbytes(8))})


def test_fuzzed_bodies_and_properties_are_each_answered_or_dead_lettered(served: Any) -> None:
    worker, producer = served
    rng = random.Random(1234)
    expected_dead = expected_replies = 0
    count = 3000
    for _ in range(count):
        body = _fuzz_body(rng)
        reply_to = None if rng.random() < 0.1 else ""
        properties = {"reply_to": reply_to,
                      "correlation_id": rng.choice([uuid.uuid4().hex, uuid.uuid4().hex, ""]),
                      "content_type": rng.choice([CONTENT_TYPE, CONTENT_TYPE, None, "text/x"]),
                      "headers": rng.choice([None, {"x": 1}])}
        if reply_to is None:  # undecodable bodies with a reply_to are answered too
            expected_dead += 1
        else:
            expected_replies += 1
        producer.publish(body, f"fuzz-{rng.randrange(1000)}", **properties)
    producer.pump(lambda: producer.received >= expected_replies, timeout=120)
    producer.pump(lambda: producer.dead_letter_count() >= expected_dead, timeout=60)
    assert producer.received == expected_replies
    assert producer.dead_letter_count() == expected_dead
    assert worker.service.metrics.states._value.get() == count
    assert worker.thread.is_alive() and worker.service.consuming.is_set()


def _nested(depth: int) -> Any:
    value: Any = []
    for _ in range(depth):
        value = [value]
    return value


@pytest.mark.parametrize("field", ["v", "episode", "seq", "state", "reward", "done", "info", "actor"])
def test_a_field_nested_a_thousand_deep_is_answered_and_the_worker_goes_on(served: Any, field: str) -> None:
    worker, producer = served
    reply = producer.wait([producer.publish(_with(**{field: _nested(1000)}), "e")])[0]
    assert reply["error"]["code"] == "bad_message" and reply["error"]["message"].startswith(field), reply
    assert worker.thread.is_alive()


def test_a_body_over_the_state_size_limit_is_answered_with_the_limit(served: Any) -> None:
    _, producer = served
    body = _with(state=b"\0" * MAX_STATE_BYTES)
    reply = producer.wait([producer.publish(body, "big")])[0]
    assert reply["error"]["code"] == "bad_message"
    assert reply["error"]["message"] == f"body: expected at most {MAX_STATE_BYTES} bytes, got {len(body)}"
    assert reply["episode"] == "big"


def test_a_state_on_its_last_allowed_delivery_is_answered_and_dead_lettered_as_poison(served: Any) -> None:
    worker, producer = served
    body = _with(episode="poisoned")
    reply = producer.wait([producer.publish(body, "poisoned",
                                            headers={DELIVERY_COUNT_HEADER: SHARD_DELIVERY_LIMIT - 1})])[0]
    assert reply["error"]["code"] == "internal" and "dead-lettered" in reply["error"]["message"]
    assert (reply["episode"], reply["seq"]) == ("poisoned", None)
    producer.pump(lambda: producer.dead_letter_count() >= 1)
    [(properties, dead_body)] = producer.dead_letters()
    assert dead_body == body and properties.headers[DEAD_REASON_HEADER] == DeadReason.POISON
    # One delivery fewer is an ordinary redelivery: the state is handled.
    again = producer.wait([producer.publish(body, "poisoned",
                                            headers={DELIVERY_COUNT_HEADER: SHARD_DELIVERY_LIMIT - 2})])[0]
    assert again["error"] is None and worker.thread.is_alive()
