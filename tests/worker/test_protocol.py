"""Protocol v1: round trips, each invalid field named in its DecodeError, the ndarray encoding, fuzzing."""

import math
import random
import struct
from typing import Any

import msgpack
import numpy as np
import pytest

from worker.wire.ndarray_codec import NDARRAY_EXT_TYPE, NdarrayCodecError, decode_ndarray, encode_ndarray
from worker.wire.protocol import (
    MAX_NESTING,
    MAX_STATE_BYTES,
    STATE_FIELDS,
    DecodeError,
    EncodeError,
    ErrorCode,
    StateMessage,
    decode_state,
    encode_state,
)
from worker.wire.replies import ErrorInfo, Reply, decode_reply, encode_reply, to_wire_action


def _valid() -> dict[str, Any]:
    return {"v": 1, "episode": "ep-1", "seq": 3, "state": [0.1, 0.2, -0.3, 0.4], "reward": 1.0, "done": False,
            "info": None}


def _pack(obj: Any) -> bytes:
    return msgpack.packb(obj)


# ----------------------------------------------------------------------------------------------- states

def test_decode_state_reads_every_field() -> None:
    body = _pack({**_valid(), "info": {"k": 1}, "actor": ["main", 0]})
    message = decode_state(body)
    assert message == StateMessage(1, "ep-1", 3, [0.1, 0.2, -0.3, 0.4], 1.0, False, {"k": 1}, ("main", 0))


def test_decode_state_defaults_and_conversions() -> None:
    obj = _valid()
    del obj["info"]
    obj["reward"] = 2  # integers are accepted and become floats
    obj["extra_key_from_a_newer_producer"] = [1, 2]
    message = decode_state(_pack(obj))
    assert message.reward == 2.0 and type(message.reward) is float
    assert message.info is None and message.actor is None


@pytest.mark.parametrize("state", [None, 0, "text", {"a": [1, 2], "b": {"c": 3.5}}, [[1, 2], [3, 4]]])
def test_state_round_trip_plain_values(state: Any) -> None:
    message = StateMessage(1, "e", 0, state, None, False, None, None)
    assert decode_state(encode_state(message)) == message


def test_state_round_trip_with_ndarrays_nested_in_maps() -> None:
    state: dict[str, Any] = {"image": np.arange(24, dtype=np.uint8).reshape(2, 3, 4),
                             "vector": np.linspace(0, 1, 5), "scalar": np.float32(1.5),
                             "flag": np.array(True)}
    message = StateMessage(1, "e", 7, state, 0.5, True, {"note": "x"}, (2, 1))
    decoded = decode_state(encode_state(message))
    assert decoded.actor == (2, 1) and decoded.done is True and decoded.info == {"note": "x"}
    for key in ("image", "vector", "flag"):
        np.testing.assert_array_equal(decoded.state[key], state[key])
        assert decoded.state[key].dtype == state[key].dtype
    assert decoded.state["scalar"] == 1.5


def _mutated(field: str, value: Any) -> bytes:
    obj = _valid()
    if value is _DELETE:
        del obj[field]
    else:
        obj[field] = value
    return _pack(obj)


_DELETE = object()

INVALID_FIELDS = [
    ("v", _DELETE), ("v", 2), ("v", True), ("v", "1"), ("v", 1.0),
    ("episode", _DELETE), ("episode", ""), ("episode", "x" * 129), ("episode", 5), ("episode", None),
    ("episode", b"bytes"),
    ("seq", _DELETE), ("seq", -1), ("seq", 1.0), ("seq", True), ("seq", "3"), ("seq", None),
    ("state", _DELETE),
    ("reward", "1"), ("reward", True), ("reward", math.nan), ("reward", math.inf), ("reward", [1.0]),
    ("done", _DELETE), ("done", 0), ("done", None), ("done", "false"),
    ("info", 3), ("info", [1]), ("info", "x"),
    ("actor", [0]), ("actor", [0, 1, 2]), ("actor", [0, -1]), ("actor", [0, "a"]), ("actor", [1.5, 0]),
    ("actor", [True, 0]), ("actor", [0, True]), ("actor", {"step_key": 0}), ("actor", "main"),
]


@pytest.mark.parametrize(("field", "value"), INVALID_FIELDS)
def test_invalid_field_is_named(field: str, value: Any) -> None:
    with pytest.raises(DecodeError) as info:
        decode_state(_mutated(field, value))
    error = info.value
    assert error.field == field
    assert str(error).startswith(f"{field}: expected ")
    assert error.message == str(error)
    # episode and seq travel with the error whenever they themselves are valid
    assert error.episode == (None if field == "episode" else "ep-1")
    assert error.seq == (None if field == "seq" else 3)


def test_episode_of_exactly_the_maximum_length_is_accepted() -> None:
    assert decode_state(_mutated("episode", "é" * 128)).episode == "é" * 128


@pytest.mark.parametrize("body", [b"", b"\xc1", b"\x93\x01", b"not msgpack at all", _pack([1, 2]), _pack(5),
                                  _pack(None), _pack({1: 2}), _pack("a string"), b"\xa2\xff\xfe"])
def test_undecodable_or_non_map_body_names_body(body: bytes) -> None:
    with pytest.raises(DecodeError) as info:
        decode_state(body)
    assert info.value.field == "body"
    assert info.value.episode is None and info.value.seq is None


def test_trailing_bytes_are_rejected() -> None:
    with pytest.raises(DecodeError) as info:
        decode_state(_pack(_valid()) + b"\x00")
    assert info.value.field == "body"
    assert info.value.episode == "ep-1" and info.value.seq == 3


def test_invalid_ndarray_in_state_names_state_and_keeps_episode() -> None:
    obj = _valid()
    obj["state"] = {"image": msgpack.ExtType(NDARRAY_EXT_TYPE, b"\x03<f4\x01\x02\x00\x00\x00" + b"\x00" * 7)}
    with pytest.raises(DecodeError) as info:
        decode_state(_pack(obj))
    assert info.value.field == "state"
    assert "expected 8 bytes for shape (2,)" in str(info.value)
    assert (info.value.episode, info.value.seq) == ("ep-1", 3)


def test_unknown_extension_type_names_its_field() -> None:
    obj = _valid()
    obj["info"] = {"x": msgpack.ExtType(5, b"abc")}
    with pytest.raises(DecodeError) as info:
        decode_state(_pack(obj))
    assert info.value.field == "info"
    assert "extension type 5" in str(info.value)


@pytest.mark.parametrize(("body", "field"), [(None, "body"), ("text", "body"), (12, "body"),
                                             (bytearray(b"\x80"), "v"), (memoryview(b"\xc0"), "body")])
def test_non_bytes_input_raises_decode_error_only(body: Any, field: str) -> None:
    with pytest.raises(DecodeError) as info:
        decode_state(body)
    assert info.value.field == field


# ------------------------------------------------------------------------------------------------ replies

@pytest.mark.parametrize("reply", [
    Reply("ep", 0, 1),
    Reply("ep", 12, {"move": [0.5, -0.5], "jump": 1}),
    Reply("ep", 12, None),  # the answer to done=true
    Reply("ep", 4, None, ErrorInfo(ErrorCode.OUT_OF_ORDER, "seq: expected 3, got 4")),
    Reply(None, None, None, ErrorInfo(ErrorCode.BAD_MESSAGE, "body: expected a msgpack map")),
    Reply("ep", 1, 0, extra={"policy_version": 3, "resumed": True}),
])
def test_reply_round_trip(reply: Reply) -> None:
    assert decode_reply(encode_reply(reply)) == reply


def test_reply_wire_map_has_exactly_the_documented_keys() -> None:
    wire = msgpack.unpackb(encode_reply(Reply("ep", 2, [1, 0], ErrorInfo(ErrorCode.INTERNAL, "boom"),
                                              extra={"policy_version": 7})))
    assert wire == {"v": 1, "episode": "ep", "seq": 2, "action": [1, 0],
                    "error": {"code": "internal", "message": "boom"}, "policy_version": 7}


@pytest.mark.parametrize(("extra", "version"), [({"policy_version": 4}, 4), ({"policy_version": None}, None),
                                                ({}, None)])
def test_reply_policy_version_is_the_published_version_or_none(extra: dict[str, Any],
                                                               version: int | None) -> None:
    assert decode_reply(encode_reply(Reply("ep", 1, 0, extra=extra))).policy_version == version


def test_reply_encodes_numpy_actions_as_plain_values() -> None:
    action = {"discrete": np.int64(1), "box": np.array([0.5, 1.5], dtype=np.float32),
              "pair": (np.int32(2), 3)}
    wire = msgpack.unpackb(encode_reply(Reply("ep", 0, action)))
    assert wire["action"] == {"discrete": 1, "box": [0.5, 1.5], "pair": [2, 3]}


def test_to_wire_action_gives_plain_python_values() -> None:
    plain = to_wire_action({"a": np.array([[1, 2]], dtype=np.int8), "b": np.float64(0.25),
                            "c": (1, np.bool_(True))})
    assert plain == {"a": [[1, 2]], "b": 0.25, "c": [1, True]}
    assert type(plain["a"][0][0]) is int and type(plain["b"]) is float and type(plain["c"][1]) is bool


def test_reply_extra_must_not_shadow_a_protocol_key() -> None:
    with pytest.raises(EncodeError) as info:
        encode_reply(Reply("ep", 0, 1, extra={"seq": 5}))
    assert info.value.field == "extra"


def test_unencodable_action_raises_encode_error() -> None:
    with pytest.raises(EncodeError) as info:
        encode_reply(Reply("ep", 0, object()))
    assert info.value.field == "action"


def test_unencodable_state_raises_encode_error() -> None:
    with pytest.raises(EncodeError) as info:
        encode_state(StateMessage(1, "e", 0, {"x": np.array(["a", "b"])}))
    assert info.value.field == "state" and "dtype" in str(info.value)


@pytest.mark.parametrize(("obj", "field"), [
    ({"v": 1, "episode": "e", "seq": 0}, "action"),
    ({"v": 2, "episode": "e", "seq": 0, "action": 1}, "v"),
    ({"v": 1, "episode": 3, "seq": 0, "action": 1}, "episode"),
    ({"v": 1, "episode": "e", "seq": -2, "action": 1}, "seq"),
    ({"v": 1, "episode": "e", "seq": 0, "action": None, "error": "boom"}, "error"),
    ({"v": 1, "episode": "e", "seq": 0, "action": None, "error": {"code": "x", "message": ""}}, "error.code"),
    ({"v": 1, "episode": "e", "seq": 0, "action": None, "error": {"code": "internal"}}, "error"),
    ({"v": 1, "episode": "e", "seq": 0, "action": 1, "policy_version": 0}, "policy_version"),
    ({"v": 1, "episode": "e", "seq": 0, "action": 1, "policy_version": "2"}, "policy_version"),
    ({"v": 1, "episode": "e", "seq": 0, "action": 1, "policy_version": True}, "policy_version"),
])
def test_invalid_reply_is_named(obj: dict[str, Any], field: str) -> None:
    with pytest.raises(DecodeError) as info:
        decode_reply(_pack(obj))
    assert info.value.field == field


# ------------------------------------------------------------------------------------------ ndarray codec

@pytest.mark.parametrize("dtype", ["bool", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32",
                                   "uint64", "float16", "float32", "float64", ">i4", ">f8"])
@pytest.mark.parametrize("shape", [(), (0,), (5,), (2, 3), (2, 0, 4), (1, 2, 3, 2)])
def test_ndarray_round_trip(dtype: str, shape: tuple[int, ...]) -> None:
    rng = np.random.default_rng(0)
    array = rng.integers(0, 2 if dtype == "bool" else 100, size=shape).astype(dtype)
    decoded = decode_ndarray(encode_ndarray(array).data)
    np.testing.assert_array_equal(decoded, array)
    assert decoded.shape == shape
    assert decoded.dtype == np.dtype(dtype).newbyteorder("=")
    assert decoded.flags.writeable and decoded.flags.c_contiguous and decoded.flags.aligned


def test_ndarray_of_a_non_contiguous_view_is_written_in_c_order() -> None:
    array = np.arange(12, dtype=np.int32).reshape(3, 4).T
    np.testing.assert_array_equal(decode_ndarray(encode_ndarray(array).data), array)


def test_ndarray_worked_example_from_the_docs() -> None:
    """The byte layout documented in docs/protocol.md, written by hand."""
    header = bytes([3]) + b"<f4" + bytes([2]) + struct.pack("<II", 2, 2)
    payload = header + struct.pack("<4f", 1.0, 2.0, 3.0, 4.0)
    assert encode_ndarray(np.array([[1, 2], [3, 4]], dtype="<f4")).data == payload
    assert payload.hex() == "033c6634" "02" "02000000" "02000000" "0000803f" "00000040" "00004040" "00008040"
    np.testing.assert_array_equal(decode_ndarray(payload), [[1.0, 2.0], [3.0, 4.0]])


@pytest.mark.parametrize(("payload", "part"), [
    (b"", "header"),
    (b"\x03", "header"),
    (b"\x03<c8\x01\x01\x00\x00\x00" + b"\x00" * 8, "dtype"),  # complex is not supported
    (b"\x03|O8\x00" + b"\x00" * 8, "dtype"),
    (b"\x03<f4", "header"),
    (b"\x03<f4\x21", "shape"),  # 33 dimensions
    (b"\x03<f4\x02\x01\x00\x00\x00", "shape"),  # second dimension cut off
    (b"\x03<f4\x01\x02\x00\x00\x00" + b"\x00" * 9, "data"),
    (b"\x03<f4\x01\xff\xff\xff\xff", "data"),  # claims 16 GiB
    (b"\x03|b1\x01\x02\x00\x00\x00\x01\x02", "data"),  # bool byte other than 0 and 1
    (b"\x03\xff\xfe\xfd\x00", "dtype"),
])
def test_invalid_ndarray_payload(payload: bytes, part: str) -> None:
    with pytest.raises(NdarrayCodecError, match=f"^ndarray {part}: expected"):
        decode_ndarray(payload)


@pytest.mark.parametrize("array", [np.array(["a"]), np.array([1 + 2j]), np.array([object()]),
                                   np.zeros((1,) * 33, dtype=np.uint8)])
def test_unsupported_ndarray_cannot_be_encoded(array: np.ndarray) -> None:
    with pytest.raises(NdarrayCodecError, match="^ndarray (dtype|shape): expected"):
        encode_ndarray(array)


# ----------------------------------------------------------------------------------------------- fuzzing

def _random_value(rng: random.Random, depth: int = 0) -> Any:
    choice = rng.randrange(12 if depth < 3 else 8)
    if choice == 0:
        return None
    if choice == 1:
        return rng.choice([True, False])
    if choice == 2:
        return rng.choice([0, -1, 1, 2**63 - 1, -(2**63), 2**64 - 1, rng.randrange(-1000, 1000)])
    if choice == 3:
        return rng.choice([0.0, -1.5, math.nan, math.inf, rng.random()])
    if choice == 4:
        return "".join(rng.choice("ab-é\x00😀") for _ in range(rng.choice([0, 1, 5, 130])))
    if choice == 5:
        return bytes(rng.randrange(256) for _ in range(rng.randrange(8)))
    if choice == 6:
        return msgpack.ExtType(rng.choice([NDARRAY_EXT_TYPE, 1, 127]),
                               bytes(rng.randrange(256) for _ in range(rng.randrange(20))))
    if choice == 7:
        return encode_ndarray((np.arange(rng.randrange(5)) % 2).astype(rng.choice(["f4", "u1", "?", "i8"])))
    if choice in (8, 9):
        return [_random_value(rng, depth + 1) for _ in range(rng.randrange(4))]
    keys = [*STATE_FIELDS, "x"]
    return {rng.choice(keys): _random_value(rng, depth + 1) for _ in range(rng.randrange(5))}


def _fuzz_bodies(count: int) -> list[bytes]:
    rng = random.Random(1234)
    valid = _pack({**_valid(), "actor": [0, 1], "info": {"a": 1}})
    bodies = []
    for i in range(count):
        kind = i % 5
        if kind == 0:  # random bytes
            bodies.append(bytes(rng.randrange(256) for _ in range(rng.randrange(40))))
        elif kind == 1:  # random msgpack values
            bodies.append(_pack(_random_value(rng)))
        elif kind == 2:  # a valid message with one field replaced, dropped, or one unknown key added
            obj = {**_valid(), "actor": [0, 1]}
            field = rng.choice([*STATE_FIELDS, "unknown"])
            if rng.random() < 0.2:
                obj.pop(field, None)
            else:
                obj[field] = _random_value(rng)
            bodies.append(_pack(obj))
        elif kind == 3:  # a valid body with bytes flipped, cut or inserted
            body = bytearray(valid)
            for _ in range(rng.randrange(1, 4)):
                position = rng.randrange(len(body))
                body[position] = rng.randrange(256)
            if rng.random() < 0.3:
                body = body[: rng.randrange(len(body))]
            bodies.append(bytes(body))
        else:  # random maps over the protocol's keys
            keys = rng.sample(STATE_FIELDS, rng.randrange(9))
            bodies.append(_pack({key: _random_value(rng) for key in keys}))
    return bodies


def test_fuzz_decode_state_raises_only_named_decode_errors() -> None:
    known_fields = {*STATE_FIELDS, "body", "x", "unknown"}
    outcomes = {"ok": 0, "error": 0}
    for body in _fuzz_bodies(5000):
        try:
            message = decode_state(body)
        except DecodeError as err:
            outcomes["error"] += 1
            assert err.field in known_fields, (body, err.field)
            assert str(err).startswith(f"{err.field}: "), (body, str(err))
            assert err.episode is None or (isinstance(err.episode, str) and 0 < len(err.episode) <= 128)
            assert err.seq is None or (type(err.seq) is int and err.seq >= 0)
        else:
            outcomes["ok"] += 1
            assert type(message.seq) is int and type(message.done) is bool
            assert isinstance(message.episode, str)
    # The corpus must exercise both paths substantially, or the test checks little.
    assert outcomes["ok"] > 100 and outcomes["error"] > 2000, outcomes


def test_fuzz_decode_reply_raises_only_decode_errors() -> None:
    for body in _fuzz_bodies(2000):
        try:
            decode_reply(body)
        except DecodeError as err:
            assert err.field in {*STATE_FIELDS, "body", "action", "error", "error.code", "x", "unknown"}


# ------------------------------------------------------------------------------------------ hostile input

def _nested(depth: int, leaf: Any = 1) -> Any:
    value = leaf
    for _ in range(depth):
        value = [value]
    return value


@pytest.mark.parametrize("field", ["v", "episode", "seq", "state", "reward", "done", "info", "actor"])
@pytest.mark.parametrize("depth", [33, 1000])
def test_deep_nesting_in_any_field_is_a_named_decode_error(field: str, depth: int) -> None:
    with pytest.raises(DecodeError) as info:
        decode_state(_pack({**_valid(), field: _nested(depth)}))
    assert info.value.field == field
    assert len(info.value.message) < 300


def test_nesting_up_to_the_limit_is_accepted_in_state_and_info() -> None:
    message = decode_state(_pack({**_valid(), "state": _nested(MAX_NESTING - 1),
                                  "info": {"k": _nested(MAX_NESTING - 2)}}))
    assert message.state == _nested(MAX_NESTING - 1)


def test_a_body_over_the_size_limit_names_the_limit_without_decoding() -> None:
    body = _pack({**_valid(), "state": b"\0" * MAX_STATE_BYTES})
    expected = f"^body: expected at most {MAX_STATE_BYTES} bytes, got {len(body)}$"
    with pytest.raises(DecodeError, match=expected):
        decode_state(body)


def test_a_zero_size_ndarray_with_huge_dimensions_names_its_key() -> None:
    payload = bytes([3]) + b"<f4" + bytes([3]) + struct.pack("<3I", 0, 2**32 - 1, 2**32 - 1)
    with pytest.raises(DecodeError) as info:
        decode_state(_pack({**_valid(), "state": msgpack.ExtType(NDARRAY_EXT_TYPE, payload)}))
    assert info.value.field == "state" and "ndarray shape" in info.value.message
    assert (info.value.episode, info.value.seq) == ("ep-1", 3)


def test_a_reserved_first_byte_is_explained() -> None:
    with pytest.raises(DecodeError) as info:
        decode_state(b"\xc1")
    assert info.value.field == "body" and "not a msgpack value" in info.value.message


def test_a_nested_reply_field_is_a_decode_error_too() -> None:
    with pytest.raises(DecodeError) as info:
        decode_reply(_pack({"v": 1, "episode": _nested(1000), "seq": 0, "action": 1, "error": None}))
    assert info.value.field == "episode"
