"""What decoding a message body needs besides msgpack: bounded descriptions, nesting limits, named errors.

Everything here is safe on hostile input: descriptions are cut to a few levels and characters (a list nested
a thousand deep must not exhaust the interpreter's recursion limit), and walks over decoded values are
iterative. Shared by the state, reply and hand-off decoders.
"""

from __future__ import annotations

import reprlib
from dataclasses import dataclass
from typing import Any

import msgpack

from worker.errors import WorkerError
from worker.wire.ndarray_codec import NDARRAY_EXT_TYPE, NdarrayCodecError, decode_ndarray

MAX_NESTING = 32
"""Deepest nesting of maps and lists accepted in a state or info (deeper values are refused, not walked)."""

MISSING: Any = object()
"""Stands for a key that is absent, so a message can say so."""

_short = reprlib.Repr()
_short.maxlevel = 3
_short.maxstring = 60
_short.maxother = 60
_short.maxlist = _short.maxtuple = _short.maxdict = _short.maxset = 6


class DecodeError(WorkerError):
    """A message body does not follow the protocol; ``field`` names the culprit ("body" for the whole body).

    ``episode`` and ``seq`` are filled in when they could be read, so an error reply can still carry them.
    """

    def __init__(self, field: str, message: str, episode: str | None = None, seq: int | None = None) -> None:
        super().__init__(message)
        self.field = field
        self.message = message
        self.episode = episode
        self.seq = seq


class EncodeError(WorkerError, ValueError):
    """A message cannot be encoded (a value msgpack cannot carry); ``field`` names the culprit."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


def describe(value: Any) -> str:
    """A short, bounded description of a received value for error messages: type and a cut repr."""
    if value is MISSING:
        return "nothing (the key is missing)"
    if value is None:
        return "nil"
    try:
        text = _short.repr(value)
    except Exception:  # noqa: BLE001 - a value whose repr fails is still described by its type
        text = "..."
    return f"{type(value).__name__} {text[:60]}{'...' if len(text) > 60 else ''}"


def nesting_within(value: Any, limit: int = MAX_NESTING) -> bool:
    """Whether maps and lists in ``value`` nest at most ``limit`` deep; cheap for flat lists of numbers."""
    kind = type(value)
    if kind is list:
        for item in value:
            inner = type(item)
            if inner is list or inner is dict:
                break
        else:
            return True
    elif kind is not dict:
        return True
    pending: list[tuple[Any, int]] = [(value, 1)]
    while pending:
        item, depth = pending.pop()
        if depth > limit:
            return False
        children = item.values() if type(item) is dict else item
        pending.extend((child, depth + 1) for child in children if type(child) in (list, dict))
    return True


def ext_hook(code: int, data: bytes) -> Any:
    """msgpack extension hook of the protocol: the ndarray extension, nothing else."""
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
        return ext_hook(code, data)
    except Exception as err:  # noqa: BLE001 - any failure of one extension is reported for its key
        return _BadExt(str(err) or type(err).__name__)


def _find_bad_ext(value: Any) -> _BadExt | None:
    pending = [value]
    while pending:
        item = pending.pop()
        if isinstance(item, _BadExt):
            return item
        if isinstance(item, dict):
            pending.extend(item.values())
        elif isinstance(item, list):
            pending.extend(item)
    return None


def diagnose(body: Any, err: Exception, best_effort: Any) -> DecodeError:
    """Explain why the fast decoding failed; runs on the error path only, so it may decode a second time.

    ``best_effort(obj)`` gives the episode and seq of a decoded map where they are valid.
    """
    try:
        obj = msgpack.unpackb(body, raw=False, ext_hook=_lenient_ext_hook)
    except msgpack.ExtraData as extra:
        unpacked = extra.unpacked if isinstance(extra.unpacked, dict) else {}
        return DecodeError("body", "body: expected a single msgpack map, got more bytes after it",
                           *best_effort(unpacked))
    except Exception as second:  # noqa: BLE001 - msgpack raises several unrelated types for corrupt input
        return DecodeError("body", f"body: expected a msgpack map, got undecodable bytes "
                                   f"({_error_text(second)})")
    if not isinstance(obj, dict):
        return DecodeError("body", f"body: expected a msgpack map, got {describe(obj)}")
    for key, value in obj.items():
        bad = _find_bad_ext(value)
        if bad is not None:
            name = key if isinstance(key, str) else "body"
            return DecodeError(name, f"{name}: {bad.reason}", *best_effort(obj))
    return DecodeError("body", f"body: expected a msgpack map, got undecodable bytes ({_error_text(err)})",
                       *best_effort(obj))


def _error_text(err: BaseException) -> str:
    """``Type: message``, or what the type means when the message is empty (msgpack's FormatError)."""
    text = str(err)
    if text:
        return f"{type(err).__name__}: {text[:200]}"
    return f"{type(err).__name__}: not a msgpack value (a reserved or invalid first byte)"
