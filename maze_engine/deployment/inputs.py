"""Checks on what an external env hands to a deployment: state, reward, done, info, events and actor id.

Every check raises SpaceMismatchError naming the offending field, so a caller (the RabbitMQ worker) can answer
with a precise error. The state check is compiled once per space: a state that is already an array of the
right shape and dtype costs a few attribute reads instead of a full ``to_space_sample`` conversion.
"""

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
from gymnasium import spaces

from maze_engine.core.actor_id import ActorID
from maze_engine.core.errors import SpaceMismatchError
from maze_engine.core.events import EventRecord
from maze_engine.core.spaces import to_space_sample

StateCheck = Callable[[Any], Any]
"""Turns an incoming maze_state into a valid sample of the state space, or raises SpaceMismatchError."""

# Arrays up to this size are summed in Python, which beats a numpy reduction on tiny arrays.
_SMALL_ARRAY = 64


def _unchecked(value: Any) -> Any:
    return value


def _box_check(space: spaces.Box, field: str) -> StateCheck:
    shape, dtype = space.shape, space.dtype
    is_float = dtype is not None and dtype.kind == "f"
    small = len(shape) == 1 and shape[0] <= _SMALL_ARRAY
    # Lists are converted here only for small float spaces (-1: no list has that length); others, and lists
    # that fail the checks, go through to_space_sample.
    list_length = shape[0] if small and is_float else -1
    # Locals, not module attributes, on the hot path; np.array's dtype as a positional argument is cheaper.
    array, isfinite = np.array, math.isfinite

    def check(value: Any) -> Any:
        kind = type(value)
        if kind is list:
            if len(value) == list_length:
                # States off the wire (msgpack, JSON) are lists of plain numbers: one conversion, same checks.
                for item in value:
                    if type(item) is not float and type(item) is not int:
                        break
                else:
                    try:
                        finite = isfinite(sum(value))
                    except OverflowError:  # an integer too large for a float
                        finite = False
                    if finite:
                        return array(value, dtype)
        # ``is`` first: numpy's builtin dtypes are singletons, and identity is cheaper than equality.
        elif kind is np.ndarray and (value.dtype is dtype or value.dtype == dtype) and value.shape == shape:
            if not is_float:
                return value
            # A finite sum proves every element finite; an overflowing sum falls through to the exact check.
            if small:
                total = sum(value.tolist())
            else:
                with np.errstate(over="ignore", invalid="ignore"):
                    total = float(value.sum())
            if isfinite(total):
                return value
        return to_space_sample(space, value, field)

    return check


def _dict_check(space: spaces.Dict, field: str) -> StateCheck:
    checks = {key: compile_state_check(sub, f"{field}.{key}") for key, sub in space.spaces.items()}
    keys = set(checks)

    def check(value: Any) -> Any:
        if type(value) is dict and value.keys() == keys:
            return {key: sub_check(value[key]) for key, sub_check in checks.items()}
        return to_space_sample(space, value, field)

    return check


def compile_state_check(space: spaces.Space | None, field: str = "state") -> StateCheck:
    """A check for states of ``space`` (no check when the core env does not know its state space)."""
    if space is None:
        return _unchecked
    if isinstance(space, spaces.Box):
        return _box_check(space, field)
    if isinstance(space, spaces.Dict):
        return _dict_check(space, field)
    return lambda value: to_space_sample(space, value, field)


def _describe(value: Any) -> str:
    text = repr(value)
    return f"{type(value).__name__} {text[:60]}{'...' if len(text) > 60 else ''}"


def check_reward(reward: Any, first: bool) -> Any:
    """A finite number (or numeric array, for multi-agent rewards); None only on an episode's first state."""
    if reward is None:
        if first:
            return None
        raise SpaceMismatchError("reward", "a number (None only on an episode's first state)", "None")
    if isinstance(reward, bool | np.bool_):
        raise SpaceMismatchError("reward", "a number", _describe(reward))
    if isinstance(reward, int | float | np.integer | np.floating):
        if not math.isfinite(reward):
            raise SpaceMismatchError("reward", "a finite number", _describe(reward))
        return reward
    if isinstance(reward, np.ndarray) and reward.dtype.kind in "iuf":
        if not np.all(np.isfinite(reward)):
            raise SpaceMismatchError("reward", "finite numbers", _describe(reward))
        return reward
    raise SpaceMismatchError("reward", "a number", _describe(reward))


def check_done(done: Any) -> bool:
    """A boolean (Python or numpy); numbers and strings are rejected rather than guessed."""
    if isinstance(done, bool | np.bool_):
        return bool(done)
    raise SpaceMismatchError("done", "a bool", _describe(done))


def check_info(info: Any) -> dict[Any, Any]:
    """A dict (a fresh one for None); other mappings are copied into a dict, since wrappers may add keys."""
    if info is None:
        return {}
    if isinstance(info, dict):
        return info
    if isinstance(info, Mapping):
        return dict(info)
    raise SpaceMismatchError("info", "a map or None", _describe(info))


def check_events(events: Any) -> Sequence[EventRecord]:
    """A list of EventRecord (None for none)."""
    if events is None:
        return ()
    if isinstance(events, list | tuple):
        for index, event in enumerate(events):
            if not isinstance(event, EventRecord):
                raise SpaceMismatchError(f"events[{index}]", "an EventRecord", _describe(event))
        return events
    raise SpaceMismatchError("events", "a list of EventRecord or None", _describe(events))


def check_actor_id(actor_id: Any, step_keys: Any) -> ActorID:
    """An ActorID (or a pair) whose step key is one of the env's step keys."""
    if type(actor_id) is not ActorID:
        if not isinstance(actor_id, Sequence) or isinstance(actor_id, str | bytes) or len(actor_id) != 2:
            raise SpaceMismatchError("actor_id", "an ActorID(step_key, agent_id)", _describe(actor_id))
        agent_id = actor_id[1]
        if isinstance(agent_id, bool) or not isinstance(agent_id, int | np.integer):
            raise SpaceMismatchError("actor_id", "an integer agent_id", _describe(agent_id))
        actor_id = ActorID(actor_id[0], int(agent_id))
    try:
        known = actor_id.step_key in step_keys
    except TypeError:  # an unhashable step key
        known = False
    if not known:
        raise SpaceMismatchError("actor_id", f"a step_key in {sorted(map(str, step_keys))}",
                                 _describe(actor_id.step_key))
    return actor_id
