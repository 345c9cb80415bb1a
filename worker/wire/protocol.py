"""Wire protocol v1, the state side: the state message, its decoding and encoding, the error codes.

Producers publish a *state* (``StateMessage``) per step of an episode; the worker answers with a reply
(``worker.wire.replies``) carrying the action or an error. The full wire format, written for implementers in
any language, is in docs/protocol.md. Decoding is strict and cheap: one ``msgpack.unpackb`` plus type checks
on the top-level fields; every failure raises ``DecodeError`` naming the field, and nothing else is raised for
arbitrary bytes (bodies over ``MAX_STATE_BYTES`` and values nested deeper than ``MAX_NESTING`` included).
"""

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import msgpack
import numpy as np

from worker.wire.checks import (
    MAX_NESTING,
    MISSING,
    DecodeError,
    EncodeError,
    describe,
    diagnose,
    ext_hook,
    nesting_within,
)
from worker.wire.ndarray_codec import NdarrayCodecError, encode_ndarray

__all__ = ["CONTENT_TYPE", "DESCRIBE_FIELD", "MAX_EPISODE_ID_LENGTH", "MAX_NESTING", "MAX_STATE_BYTES",
           "PROTOCOL_VERSION", "STATE_FIELDS", "DecodeError", "EncodeError", "ErrorCode", "StateMessage",
           "decode_state", "encode_describe_request", "encode_state", "is_describe_request", "valid_episode"]

PROTOCOL_VERSION = 1
CONTENT_TYPE = "application/msgpack"
MAX_EPISODE_ID_LENGTH = 128
MAX_STATE_BYTES = 4 * 1024 * 1024
"""Largest state body a worker accepts (4 MiB: a 1024x1024 RGB image as uint8 ndarray fits); larger bodies
are answered ``bad_message`` naming the limit. The broker's own message size limit lies above it."""

STATE_FIELDS = ("v", "episode", "seq", "state", "reward", "done", "info", "actor", "truncated",
                "applied_action")
DESCRIBE_FIELD = "describe"
"""A body ``{"v": 1, "describe": true}`` (no ``episode``) asks a worker for its spaces (docs/protocol.md)."""


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
    truncated: bool = False
    """With ``done``: the episode ended by a time limit, not by termination."""
    applied_action: Any = None
    """The action the producer applied after the previous state (its own controller, an operator), as plain
    msgpack values; None when not reported. Checked against the action space by the worker."""
    size: int = field(default=0, compare=False, repr=False)
    """Bytes of the body it was decoded from (0 when built in code): what holding it costs."""


# --------------------------------------------------------------------------------------------------- decoding

_new_object = object.__new__
_unpackb = msgpack.unpackb
_set_attribute = object.__setattr__


def valid_episode(value: Any) -> bool:
    """Whether ``value`` is a usable episode id (also the routing key of a state)."""
    return type(value) is str and 0 < len(value) <= MAX_EPISODE_ID_LENGTH


def _valid_seq(value: Any) -> bool:
    return type(value) is int and value >= 0


def best_effort(obj: Mapping[str, Any]) -> tuple[str | None, int | None]:
    """Episode and seq of a rejected message where they are valid, so the error reply can carry them."""
    episode, seq = obj.get("episode"), obj.get("seq")
    return (episode if valid_episode(episode) else None, seq if _valid_seq(seq) else None)


def fail(obj: Mapping[str, Any], field: str, expected: str, got: Any) -> DecodeError:
    """The DecodeError for ``field`` of ``obj``: what was expected and (briefly) what came."""
    return DecodeError(field, f"{field}: expected {expected}, got {describe(got)}", *best_effort(obj))


def unpack_map(body: Any, limit: int | None = None) -> dict:
    """``body`` as a msgpack map, or DecodeError naming ``body`` (or the key of a bad ndarray)."""
    if limit is not None and type(body) is bytes and len(body) > limit:
        raise DecodeError("body", f"body: expected at most {limit} bytes, got {len(body)}")
    try:
        obj = msgpack.unpackb(body, raw=False, ext_hook=ext_hook)
    except Exception as err:  # noqa: BLE001 - corrupt msgpack surfaces as ValueError, TypeError, StackError...
        raise diagnose(body, err, best_effort) from None
    if type(obj) is not dict:
        raise DecodeError("body", f"body: expected a msgpack map, got {describe(obj)}")
    return obj


def decode_state(body: bytes) -> StateMessage:
    """Decode and validate a state message body; raise DecodeError naming the first offending field."""
    # unpack_map, inlined: this is the hot path.
    if type(body) is bytes and len(body) > MAX_STATE_BYTES:
        raise DecodeError("body", f"body: expected at most {MAX_STATE_BYTES} bytes, got {len(body)}")
    try:
        obj = _unpackb(body, raw=False, ext_hook=ext_hook)
    except Exception as err:  # noqa: BLE001 - corrupt msgpack surfaces as ValueError, TypeError, StackError...
        raise diagnose(body, err, best_effort) from None
    if type(obj) is not dict:
        raise DecodeError("body", f"body: expected a msgpack map, got {describe(obj)}")
    get = obj.get
    v = get("v", MISSING)
    if type(v) is not int or v != PROTOCOL_VERSION:
        raise fail(obj, "v", f"protocol version {PROTOCOL_VERSION}", v)
    episode = get("episode", MISSING)
    if not valid_episode(episode):
        raise fail(obj, "episode", f"a non-empty string of at most {MAX_EPISODE_ID_LENGTH} characters",
                   episode)
    seq = get("seq", MISSING)
    if not _valid_seq(seq):
        raise fail(obj, "seq", "a non-negative integer", seq)
    state = get("state", MISSING)
    if state is MISSING:
        raise fail(obj, "state", "the state of the environment", state)
    kind = type(state)
    if kind is list:  # a flat list of numbers is the common case: checked here without a call
        for item in state:
            inner = type(item)
            if inner is list or inner is dict:
                if not nesting_within(state):
                    raise fail(obj, "state", f"maps and lists nested at most {MAX_NESTING} deep", state)
                break
    elif kind is dict and not nesting_within(state):
        raise fail(obj, "state", f"maps and lists nested at most {MAX_NESTING} deep", state)
    reward = get("reward")
    if reward is not None:
        kind = type(reward)
        if (kind is not float and kind is not int) or not math.isfinite(reward):
            raise fail(obj, "reward", "a finite number or nil", reward)
        reward = float(reward)
    done = get("done", MISSING)
    if type(done) is not bool:
        raise fail(obj, "done", "true or false", done)
    truncated = get("truncated", False)
    if truncated is not False and (truncated is not True or not done):
        raise fail(obj, "truncated", "true or false, and true only with done: true", truncated)
    applied = get("applied_action")
    if applied is not None and not nesting_within(applied):
        raise fail(obj, "applied_action", f"an action (nested at most {MAX_NESTING} deep) or nil", applied)
    info = get("info")
    if info is not None and (type(info) is not dict or not nesting_within(info)):
        raise fail(obj, "info", f"a map (nested at most {MAX_NESTING} deep) or nil", info)
    actor = get("actor")
    if actor is not None:
        if (type(actor) is not list or len(actor) != 2 or type(actor[0]) not in (int, str)
                or type(actor[1]) is not int or actor[1] < 0):
            raise fail(obj, "actor", "nil or [step_key (integer or string), agent_id (non-negative integer)]",
                       actor)
        actor = (actor[0], actor[1])
    # Fields are validated above; filling __dict__ in one step skips the frozen dataclass's per-field
    # object.__setattr__ calls, which cost as much as the msgpack decoding itself.
    message = _new_object(StateMessage)
    _set_attribute(message, "__dict__", {"v": v, "episode": episode, "seq": seq, "state": state,
                                         "reward": reward, "done": done, "info": info, "actor": actor,
                                         "truncated": truncated, "applied_action": applied,
                                         "size": len(body)})
    return message


# --------------------------------------------------------------------------------------------------- encoding

def _state_default(value: Any) -> Any:
    """msgpack fallback for states: arrays use the binary ndarray encoding, numpy scalars become numbers."""
    if isinstance(value, np.ndarray):
        return encode_ndarray(value)
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Mapping):
        return dict(value)
    raise TypeError(f"cannot encode {type(value).__name__}")


def encode_state(message: StateMessage) -> bytes:
    """Encode a state message; numpy arrays anywhere in ``state`` use the binary ndarray encoding."""
    wire = {"v": message.v, "episode": message.episode, "seq": message.seq, "state": message.state,
            "reward": message.reward, "done": message.done, "info": message.info,
            "actor": None if message.actor is None else list(message.actor)}
    if message.truncated:
        wire["truncated"] = True
    if message.applied_action is not None:
        wire["applied_action"] = message.applied_action
    try:
        return msgpack.packb(wire, default=_state_default)
    except NdarrayCodecError as err:
        raise EncodeError("state", f"state: {err}") from err
    except (TypeError, ValueError, OverflowError) as err:
        raise EncodeError("state", f"state: expected maps, lists, numbers, strings and ndarrays, got "
                                   f"{describe(message.state)} ({err})") from err


# ------------------------------------------------------------------------------------------ describe requests

def encode_describe_request() -> bytes:
    """The body that asks a running worker for its spaces: ``{"v": 1, "describe": true}``."""
    return msgpack.packb({"v": PROTOCOL_VERSION, DESCRIBE_FIELD: True})


def is_describe_request(body: Any) -> bool:
    """Whether ``body`` is a describe request (a map with ``v`` 1, ``describe: true`` and no ``episode``).

    Asked only of bodies that failed to decode as a state, so states pay nothing for it.
    """
    if type(body) is not bytes or len(body) > 1024:
        return False
    try:
        obj = msgpack.unpackb(body, raw=False)
    except Exception:  # noqa: BLE001 - not msgpack at all: not a describe request either
        return False
    return (type(obj) is dict and obj.get("v") == PROTOCOL_VERSION and obj.get(DESCRIBE_FIELD) is True
            and "episode" not in obj)
