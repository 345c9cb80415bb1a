"""Wire protocol v1, the reply side: the reply map, its decoding (producers) and its encoding (the worker).

Every reply the worker sends is encoded here: ``encode_reply`` for any ``Reply``, ``encode_action_reply`` for
the hot path (the same bytes, packed from prebuilt pieces) and ``encode_error_reply`` for errors.
"""

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import msgpack
import numpy as np

from worker.wire.checks import MISSING, DecodeError, EncodeError, describe
from worker.wire.protocol import PROTOCOL_VERSION, ErrorCode, fail, unpack_map

REPLY_FIELDS = ("v", "episode", "seq", "action", "error")
RESUMED_FIELD = "resumed"
"""Optional reply key: true when the worker resumed an episode whose earlier state was lost with a crashed
worker (a fresh wrapper stack from this state on); absent otherwise."""
WORKER_FIELD = "worker"
"""Optional reply key: the id of the worker that answered (which worker holds the episode)."""
DESCRIBE_REPLY_FIELD = "describe"
"""Key of the reply to a describe request: the worker's spaces and serving mode (docs/protocol.md)."""
POLICY_VERSION_FIELD = "policy_version"
"""Reply key of action and done replies: the published policy version that acted (an integer >= 1), nil
when the worker serves a policy that is not a published one; absent in error replies."""


@dataclass(frozen=True)
class ErrorInfo:
    """The ``error`` map of a reply."""

    code: ErrorCode
    message: str


@dataclass(frozen=True)
class Reply:
    """The worker's answer to one state: the action, or an error (then ``action`` is None).

    ``episode`` and ``seq`` are None only in a ``bad_message`` reply to a body where they could not be read.
    ``extra`` holds additional top-level wire keys (later protocol additions, e.g. ``policy_version``).
    """

    episode: str | None
    seq: int | None
    action: Any
    error: ErrorInfo | None = None
    v: int = PROTOCOL_VERSION
    extra: Mapping[str, Any] = field(default_factory=dict)

    @property
    def resumed(self) -> bool:
        """Whether the worker resumed this episode after its earlier state was lost (``resumed`` key)."""
        return self.extra.get(RESUMED_FIELD) is True

    @property
    def worker(self) -> str | None:
        """The id of the worker that answered, when the reply names it (``worker`` key)."""
        value = self.extra.get(WORKER_FIELD)
        return value if isinstance(value, str) else None

    @property
    def policy_version(self) -> int | None:
        """The published policy version that chose the action (``policy_version`` key), else None."""
        value = self.extra.get(POLICY_VERSION_FIELD)
        return value if type(value) is int else None


_ERROR_CODES = frozenset(code.value for code in ErrorCode)


def decode_reply(body: bytes) -> Reply:
    """Decode and validate a reply body (the producer side); raise DecodeError naming the offending field."""
    obj = unpack_map(body)
    v = obj.get("v", MISSING)
    if type(v) is not int or v != PROTOCOL_VERSION:
        raise fail(obj, "v", f"protocol version {PROTOCOL_VERSION}", v)
    episode = obj.get("episode")
    if episode is not None and type(episode) is not str:
        raise fail(obj, "episode", "a string or nil", episode)
    seq = obj.get("seq")
    if seq is not None and (type(seq) is not int or seq < 0):
        raise fail(obj, "seq", "a non-negative integer or nil", seq)
    if "action" not in obj:
        raise fail(obj, "action", "the action (nil when there is none)", MISSING)
    error = obj.get("error")
    info: ErrorInfo | None = None
    if error is not None:
        if type(error) is not dict or type(error.get("message")) is not str:
            raise fail(obj, "error", "nil or a map {code, message} of strings", error)
        code = error.get("code")
        if code not in _ERROR_CODES:
            raise fail(obj, "error.code", f"one of {sorted(_ERROR_CODES)}", code)
        info = ErrorInfo(ErrorCode(code), error["message"])
    policy_version = obj.get(POLICY_VERSION_FIELD)
    if policy_version is not None and (type(policy_version) is not int or policy_version < 1):
        raise fail(obj, POLICY_VERSION_FIELD, "an integer >= 1 or nil", policy_version)
    resumed = obj.get(RESUMED_FIELD, False)
    if type(resumed) is not bool:
        raise fail(obj, RESUMED_FIELD, "true, false or absent", resumed)
    worker = obj.get(WORKER_FIELD)
    if worker is not None and type(worker) is not str:
        raise fail(obj, WORKER_FIELD, "a string or absent", worker)
    extra = {key: value for key, value in obj.items() if key not in REPLY_FIELDS}
    return Reply(episode, seq, obj["action"], info, v, extra)


# --------------------------------------------------------------------------------------------------- encoding

def to_wire_action(action: Any) -> Any:
    """Turn an action (numpy scalars and arrays, dicts, tuples) into plain msgpack-able values."""
    if isinstance(action, np.ndarray):
        return action.tolist()
    if isinstance(action, np.generic):
        return action.item()
    if isinstance(action, Mapping):
        return {key: to_wire_action(item) for key, item in action.items()}
    if isinstance(action, tuple | list):
        return [to_wire_action(item) for item in action]
    return action


def _plain_default(value: Any) -> Any:
    """msgpack fallback for replies: numpy values become plain numbers and lists."""
    if isinstance(value, np.ndarray | np.generic):
        return to_wire_action(value)
    if isinstance(value, Mapping):
        return dict(value)
    raise TypeError(f"cannot encode {type(value).__name__}")


def encode_reply(reply: Reply) -> bytes:
    """Encode a reply as the msgpack map of protocol v1 (extra keys merged in; numpy values made plain)."""
    error = None if reply.error is None else {"code": reply.error.code.value, "message": reply.error.message}
    wire = {"v": reply.v, "episode": reply.episode, "seq": reply.seq, "action": reply.action, "error": error}
    for key, value in reply.extra.items():
        if key in wire:
            raise EncodeError("extra", f"extra: expected keys other than {list(REPLY_FIELDS)}, got {key!r}")
        wire[key] = value
    try:
        return msgpack.packb(wire, default=_plain_default)
    except (TypeError, ValueError, OverflowError) as err:
        raise EncodeError("action", f"action: expected plain msgpack values, got {describe(reply.action)} "
                                    f"({err})") from err


def encode_error_reply(episode: str | None, seq: int | None, code: ErrorCode, message: str) -> bytes:
    """An error reply: action nil, ``error`` {code, message}."""
    return encode_reply(Reply(episode, seq, None, ErrorInfo(code, message)))


_pack = msgpack.Packer(default=to_wire_action).pack
_FIELD = {name: _pack(name) for name in ("v", "episode", "seq", "action", "error", POLICY_VERSION_FIELD,
                                         WORKER_FIELD)}
_REPLY_HEAD = _FIELD["v"] + _pack(PROTOCOL_VERSION) + _FIELD["episode"]
_reply_frames: dict[tuple[str | None, int | None], tuple[bytes, bytes]] = {}
"""(worker, policy_version) -> the bytes before the episode and after the action of an action reply."""


def encode_action_reply(episode: str, seq: int, action: Any, worker: str | None = None,
                        policy_version: int | None = None) -> bytes:
    """``encode_reply(Reply(episode, seq, to_wire_action(action), extra={"policy_version": policy_version}))``
    without building the Reply: the hot path.

    The same bytes as ``encode_reply`` (a test holds them equal); numpy values become plain numbers.
    ``worker`` adds the answering worker's id (the ``worker`` key). Only the episode, seq and action are
    packed per reply; the map's other keys and values are packed once per worker and policy version.
    """
    if type(action) is np.int64:  # Discrete actions, the common case
        action = int(action)
    frame = _reply_frames.get((worker, policy_version))
    if frame is None:
        frame = _reply_frames[(worker, policy_version)] = _reply_frame(worker, policy_version)
    head, tail = frame
    return b"".join((head, _pack(episode), _FIELD["seq"], _pack(seq), _FIELD["action"], _pack(action), tail))


def _reply_frame(worker: str | None, policy_version: int | None) -> tuple[bytes, bytes]:
    tail = _FIELD["error"] + _pack(None) + _FIELD[POLICY_VERSION_FIELD] + _pack(policy_version)
    if worker is None:
        return b"\x86" + _REPLY_HEAD, tail  # a map of 6 entries (fixmap)
    return b"\x87" + _REPLY_HEAD, tail + _FIELD[WORKER_FIELD] + _pack(worker)


def encode_describe_reply(description: Mapping[str, Any], worker: str | None) -> bytes:
    """The reply to a describe request: episode, seq, action and error nil, ``describe`` the description."""
    extra: dict[str, Any] = {DESCRIBE_REPLY_FIELD: dict(description)}
    if worker is not None:
        extra[WORKER_FIELD] = worker
    return encode_reply(Reply(None, None, None, extra=extra))


def decode_error(err: DecodeError) -> bytes:
    """The ``bad_message`` reply to a state that failed to decode (episode and seq where they were read)."""
    return encode_error_reply(err.episode, err.seq, ErrorCode.BAD_MESSAGE, err.message)
