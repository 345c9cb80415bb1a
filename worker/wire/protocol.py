"""Wire protocol v1: message schemas, msgpack encoding and decoding, error codes.

Producers publish a *state* (``StateMessage``) per step of an episode; the worker answers with a ``Reply``
carrying the action or an error. The full wire format, written for implementers in any language, is in
docs/protocol.md. Decoding is strict and cheap: one ``msgpack.unpackb`` plus type checks on the top-level
fields; every failure raises ``DecodeError`` naming the field, and nothing else is raised for arbitrary bytes.
"""

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import msgpack
import numpy as np

from maze_engine.core.spaces import to_plain
from worker.wire.ndarray_codec import NDARRAY_EXT_TYPE, NdarrayCodecError, decode_ndarray, encode_ndarray

PROTOCOL_VERSION = 1
CONTENT_TYPE = "application/msgpack"
MAX_EPISODE_ID_LENGTH = 128

STATE_FIELDS = ("v", "episode", "seq", "state", "reward", "done", "info", "actor")
REPLY_FIELDS = ("v", "episode", "seq", "action", "error")
RESUMED_FIELD = "resumed"
"""Optional reply key: true when the worker resumed an episode whose earlier state was lost with a crashed
worker (a fresh wrapper stack from this state on); absent otherwise."""
WORKER_FIELD = "worker"
"""Optional reply key: the id of the worker that answered (which worker holds the episode)."""
POLICY_VERSION_FIELD = "policy_version"
"""Reply key of action and done replies: the published policy version that acted (an integer >= 1), nil
when the worker serves a policy that is not a published one; absent in error replies."""


class ErrorCode(StrEnum):
    """The ``error.code`` values a reply may carry."""

    BAD_MESSAGE = "bad_message"
    """Undecodable body, or a missing or mistyped field, or a state that does not fit the space."""
    OUT_OF_ORDER = "out_of_order"
    """``seq`` skips ahead of the next expected step of the episode."""
    UNKNOWN_EPISODE = "unknown_episode"
    """``seq`` > 0 for an episode the worker does not hold."""
    OVERLOADED = "overloaded"
    """The worker holds its maximum number of open episodes; seq 0 is refused."""
    INTERNAL = "internal"
    """A wrapper or the policy raised; the worker keeps going, the episode is closed."""
    EPISODE_LOST = "episode_lost"
    """The episode's state was lost with a crashed worker (``episodes.on_lost: error``)."""


@dataclass(frozen=True)
class StateMessage:
    """One step of an episode as the producer sends it (decoded, or about to be encoded)."""

    v: int
    episode: str
    seq: int
    state: Any
    """Plain msgpack values (maps, lists, numbers) with ``np.ndarray`` where the binary encoding was used."""
    reward: float | None = None
    done: bool = False
    info: dict | None = None
    actor: tuple[int | str, int] | None = None
    """``(step_key, agent_id)`` for multi-step or multi-agent envs; None for the single actor."""


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


class DecodeError(Exception):
    """A message body does not follow protocol v1; ``field`` names the culprit ("body" for the whole body).

    ``episode`` and ``seq`` are filled in when they could be read, so an error reply can still carry them.
    """

    code = ErrorCode.BAD_MESSAGE

    def __init__(self, field: str, message: str, episode: str | None = None, seq: int | None = None) -> None:
        super().__init__(message)
        self.field = field
        self.message = message
        self.episode = episode
        self.seq = seq


class EncodeError(ValueError):
    """A message cannot be encoded (a value msgpack cannot carry); ``field`` names the culprit."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


# --------------------------------------------------------------------------------------------------- decoding

_MISSING: Any = object()
_new_object = object.__new__
_set_attribute = object.__setattr__


def _describe(value: Any) -> str:
    if value is _MISSING:
        return "nothing (the key is missing)"
    if value is None:
        return "nil"
    text = repr(value)
    return f"{type(value).__name__} {text[:60]}{'...' if len(text) > 60 else ''}"


def _ext_hook(code: int, data: bytes) -> Any:
    if code == NDARRAY_EXT_TYPE:
        return decode_ndarray(data)
    raise NdarrayCodecError(f"expected no msgpack extension but the ndarray (type {NDARRAY_EXT_TYPE}), "
                            f"got extension type {code}")


@dataclass(frozen=True)
class _BadExt:
    """Stands in for an invalid extension value during the second, diagnostic decoding pass."""

    reason: str


def _lenient_ext_hook(code: int, data: bytes) -> Any:
    try:
        return _ext_hook(code, data)
    except NdarrayCodecError as err:
        return _BadExt(str(err))


def _find_bad_ext(value: Any) -> _BadExt | None:
    if isinstance(value, _BadExt):
        return value
    if isinstance(value, dict):
        value = list(value.values())
    if isinstance(value, list):
        for item in value:
            found = _find_bad_ext(item)
            if found is not None:
                return found
    return None


def _valid_episode(value: Any) -> bool:
    return type(value) is str and 0 < len(value) <= MAX_EPISODE_ID_LENGTH


def _valid_seq(value: Any) -> bool:
    return type(value) is int and value >= 0


def _best_effort(obj: dict) -> tuple[str | None, int | None]:
    """Episode and seq of a rejected message where they are valid, so the error reply can carry them."""
    episode, seq = obj.get("episode"), obj.get("seq")
    return (episode if _valid_episode(episode) else None, seq if _valid_seq(seq) else None)


def _fail(obj: dict, field: str, expected: str, got: Any) -> DecodeError:
    return DecodeError(field, f"{field}: expected {expected}, got {_describe(got)}", *_best_effort(obj))


def _diagnose(body: Any, err: Exception) -> DecodeError:
    """Explain why the fast decoding failed; runs on the error path only, so it may decode a second time."""
    try:
        obj = msgpack.unpackb(body, raw=False, ext_hook=_lenient_ext_hook)
    except msgpack.ExtraData as extra:
        unpacked = extra.unpacked if isinstance(extra.unpacked, dict) else {}
        return DecodeError("body", "body: expected a single msgpack map, got more bytes after it",
                           *_best_effort(unpacked))
    except Exception as second:  # msgpack raises several unrelated types for corrupt input
        return DecodeError("body", f"body: expected a msgpack map, got undecodable bytes "
                                   f"({type(second).__name__}: {second})")
    if not isinstance(obj, dict):
        return DecodeError("body", f"body: expected a msgpack map, got {_describe(obj)}")
    for key, value in obj.items():
        bad = _find_bad_ext(value)
        if bad is not None:
            name = key if isinstance(key, str) else "body"
            return DecodeError(name, f"{name}: {bad.reason}", *_best_effort(obj))
    return DecodeError("body", f"body: expected a msgpack map, got undecodable bytes "
                               f"({type(err).__name__}: {err})", *_best_effort(obj))


def decode_state(body: bytes) -> StateMessage:
    """Decode and validate a state message body; raise DecodeError naming the first offending field."""
    try:
        obj = msgpack.unpackb(body, raw=False, ext_hook=_ext_hook)
    except Exception as err:  # corrupt msgpack surfaces as ValueError, TypeError, StackError, ...
        raise _diagnose(body, err) from None
    if type(obj) is not dict:
        raise DecodeError("body", f"body: expected a msgpack map, got {_describe(obj)}")
    get = obj.get
    v = get("v", _MISSING)
    if type(v) is not int or v != PROTOCOL_VERSION:
        raise _fail(obj, "v", f"protocol version {PROTOCOL_VERSION}", v)
    episode = get("episode", _MISSING)
    if not _valid_episode(episode):
        raise _fail(obj, "episode", f"a non-empty string of at most {MAX_EPISODE_ID_LENGTH} characters",
                    episode)
    seq = get("seq", _MISSING)
    if not _valid_seq(seq):
        raise _fail(obj, "seq", "a non-negative integer", seq)
    state = get("state", _MISSING)
    if state is _MISSING:
        raise _fail(obj, "state", "the state of the environment", state)
    reward = get("reward")
    if reward is not None:
        kind = type(reward)
        if (kind is not float and kind is not int) or not math.isfinite(reward):
            raise _fail(obj, "reward", "a finite number or nil", reward)
        reward = float(reward)
    done = get("done", _MISSING)
    if type(done) is not bool:
        raise _fail(obj, "done", "true or false", done)
    info = get("info")
    if info is not None and type(info) is not dict:
        raise _fail(obj, "info", "a map or nil", info)
    actor = get("actor")
    if actor is not None:
        if (type(actor) is not list or len(actor) != 2 or type(actor[0]) not in (int, str)
                or type(actor[1]) is not int or actor[1] < 0):
            raise _fail(obj, "actor",
                        "nil or [step_key (integer or string), agent_id (non-negative integer)]", actor)
        actor = (actor[0], actor[1])
    # Fields are validated above; filling __dict__ in one step skips the frozen dataclass's per-field
    # object.__setattr__ calls, which cost as much as the msgpack decoding itself.
    message = _new_object(StateMessage)
    _set_attribute(message, "__dict__", {"v": v, "episode": episode, "seq": seq, "state": state,
                                         "reward": reward, "done": done, "info": info, "actor": actor})
    return message


def decode_reply(body: bytes) -> Reply:
    """Decode and validate a reply body (the producer side); raise DecodeError naming the offending field."""
    try:
        obj = msgpack.unpackb(body, raw=False, ext_hook=_ext_hook)
    except Exception as err:  # corrupt msgpack surfaces as ValueError, TypeError, StackError, ...
        raise _diagnose(body, err) from None
    if type(obj) is not dict:
        raise DecodeError("body", f"body: expected a msgpack map, got {_describe(obj)}")
    v = obj.get("v", _MISSING)
    if type(v) is not int or v != PROTOCOL_VERSION:
        raise _fail(obj, "v", f"protocol version {PROTOCOL_VERSION}", v)
    episode = obj.get("episode")
    if episode is not None and type(episode) is not str:
        raise _fail(obj, "episode", "a string or nil", episode)
    seq = obj.get("seq")
    if seq is not None and not _valid_seq(seq):
        raise _fail(obj, "seq", "a non-negative integer or nil", seq)
    if "action" not in obj:
        raise _fail(obj, "action", "the action (nil when there is none)", _MISSING)
    error = obj.get("error")
    info: ErrorInfo | None = None
    if error is not None:
        if type(error) is not dict or type(error.get("message")) is not str:
            raise _fail(obj, "error", "nil or a map {code, message} of strings", error)
        code = error.get("code")
        if code not in _ERROR_CODES:
            raise _fail(obj, "error.code", f"one of {sorted(_ERROR_CODES)}", code)
        info = ErrorInfo(ErrorCode(code), error["message"])
    policy_version = obj.get(POLICY_VERSION_FIELD)
    if policy_version is not None and (type(policy_version) is not int or policy_version < 1):
        raise _fail(obj, POLICY_VERSION_FIELD, "an integer >= 1 or nil", policy_version)
    resumed = obj.get(RESUMED_FIELD, False)
    if type(resumed) is not bool:
        raise _fail(obj, RESUMED_FIELD, "true, false or absent", resumed)
    worker = obj.get(WORKER_FIELD)
    if worker is not None and type(worker) is not str:
        raise _fail(obj, WORKER_FIELD, "a string or absent", worker)
    extra = {key: value for key, value in obj.items() if key not in REPLY_FIELDS}
    return Reply(episode, seq, obj["action"], info, v, extra)


_ERROR_CODES = frozenset(code.value for code in ErrorCode)


# --------------------------------------------------------------------------------------------------- encoding


def to_wire_action(action: Any) -> Any:
    """Turn an action (numpy scalars and arrays, dicts, tuples) into plain msgpack-able values."""
    return to_plain(action)


def _plain_default(value: Any) -> Any:
    """msgpack fallback for replies: numpy values become plain numbers and lists."""
    if isinstance(value, np.ndarray | np.generic):
        return to_plain(value)
    if isinstance(value, Mapping):
        return dict(value)
    raise TypeError(f"cannot encode {type(value).__name__}")


def _state_default(value: Any) -> Any:
    """msgpack fallback for states: arrays use the binary ndarray encoding, numpy scalars become numbers."""
    if isinstance(value, np.ndarray):
        return encode_ndarray(value)
    if isinstance(value, np.generic):
        return value.item()
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
        raise EncodeError("action", f"action: expected plain msgpack values, got {_describe(reply.action)} "
                                    f"({err})") from err


def encode_state(message: StateMessage) -> bytes:
    """Encode a state message; numpy arrays anywhere in ``state`` use the binary ndarray encoding."""
    wire = {"v": message.v, "episode": message.episode, "seq": message.seq, "state": message.state,
            "reward": message.reward, "done": message.done, "info": message.info,
            "actor": None if message.actor is None else list(message.actor)}
    try:
        return msgpack.packb(wire, default=_state_default)
    except NdarrayCodecError as err:
        raise EncodeError("state", f"state: {err}") from err
    except (TypeError, ValueError, OverflowError) as err:
        raise EncodeError("state", f"state: expected maps, lists, numbers, strings and ndarrays, got "
                                   f"{_describe(message.state)} ({err})") from err
