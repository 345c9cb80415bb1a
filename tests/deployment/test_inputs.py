"""The compiled state check: fast path for exact arrays, the full conversion for everything else."""

from typing import Any

import numpy as np
import pytest
from gymnasium import spaces

from maze_engine import ActorID, EventRecord, SpaceMismatchError
from maze_engine.deployment.inputs import (
    check_actor_id,
    check_done,
    check_events,
    check_info,
    check_reward,
    compile_state_check,
)

BOX = spaces.Box(-1.0, 1.0, shape=(3,), dtype=np.float32)
BIG_BOX = spaces.Box(-1.0, 1.0, shape=(8, 16), dtype=np.float64)
DICT = spaces.Dict({"position": BOX, "mode": spaces.Discrete(3), "grid": spaces.MultiBinary(4)})


def test_exact_array_passes_through_unchanged() -> None:
    state = np.zeros(3, dtype=np.float32)
    assert compile_state_check(BOX)(state) is state
    big = np.zeros((8, 16))
    assert compile_state_check(BIG_BOX)(big) is big


@pytest.mark.parametrize(("value", "expected"), [
    ([0.0, 0.5, 1.0], np.array([0.0, 0.5, 1.0], dtype=np.float32)),
    (np.zeros(3, dtype=np.float64), np.zeros(3, dtype=np.float32)),
    (np.zeros(3, dtype=np.int64), np.zeros(3, dtype=np.float32)),
])
def test_other_forms_are_converted(value: Any, expected: np.ndarray) -> None:
    converted = compile_state_check(BOX)(value)
    assert converted.dtype == np.float32
    np.testing.assert_array_equal(converted, expected)


@pytest.mark.parametrize(("space", "value", "field", "message"), [
    (BOX, np.array([0.0, np.nan, 0.0], dtype=np.float32), "state", "finite"),
    (BOX, np.array([0.0, np.inf, -np.inf], dtype=np.float32), "state", "finite"),
    (BIG_BOX, np.full((8, 16), np.nan), "state", "finite"),
    (BOX, np.zeros(4, dtype=np.float32), "state", "shape (3,)"),
    (BOX, "abc", "state", "numbers"),
    (DICT, {"position": [0, 0, 0], "mode": 5, "grid": [0, 1, 0, 1]}, "state.mode", "an integer in [0, 3)"),
    (DICT, {"position": [0, 0, 0], "mode": 1, "grid": [0, 2, 0, 1]}, "state.grid", "only 0 and 1"),
    (DICT, {"position": [0, 0], "mode": 1, "grid": [0, 1, 0, 1]}, "state.position", "shape (3,)"),
    (DICT, {"position": [0, 0, 0], "grid": [0, 1, 0, 1]}, "state.mode", "key is missing"),
    (DICT, [1, 2, 3], "state", "a map with keys"),
])
def test_mismatches_name_the_field(space: spaces.Space, value: Any, field: str, message: str) -> None:
    with pytest.raises(SpaceMismatchError) as caught:
        compile_state_check(space)(value)
    assert caught.value.field == field and message in str(caught.value)


def test_huge_finite_values_are_not_mistaken_for_overflow() -> None:
    # Their sum overflows to inf, so the fast check defers to the exact one, which accepts them.
    state = np.full((8, 16), np.finfo(np.float64).max / 2)
    assert compile_state_check(BIG_BOX)(state) is state


def test_dict_states_are_checked_per_key() -> None:
    state = {"position": np.zeros(3, dtype=np.float32), "mode": 2, "grid": [1, 0, 1, 0]}
    checked = compile_state_check(DICT)(state)
    assert checked["position"] is state["position"] and checked["mode"] == 2
    assert checked["grid"].dtype == np.int8


def test_no_space_means_no_check() -> None:
    anything = object()
    assert compile_state_check(None)(anything) is anything


@pytest.mark.parametrize(("reward", "first", "ok"), [
    (None, True, True), (None, False, False), (1, False, True), (np.float32(0.5), False, True),
    (np.array([1.0, 2.0]), False, True), (np.array([np.nan]), False, False), (True, False, False),
    ("1", False, False), (float("inf"), False, False),
])
def test_check_reward(reward: Any, first: bool, ok: bool) -> None:
    if ok:
        assert check_reward(reward, first) is reward
    else:
        with pytest.raises(SpaceMismatchError, match="reward"):
            check_reward(reward, first)


def test_check_done_info_events() -> None:
    assert check_done(np.bool_(True)) is True
    with pytest.raises(SpaceMismatchError, match="done"):
        check_done(1)
    info: dict[str, Any] = {"a": 1}
    assert check_info(info) is info and check_info(None) == {}
    events = [EventRecord("e")]
    assert check_events(events) is events and check_events(None) == ()


def test_check_actor_id() -> None:
    assert check_actor_id([1, 0], {0, 1}) == ActorID(1, 0)
    with pytest.raises(SpaceMismatchError, match="actor_id: expected a step_key in"):
        check_actor_id(ActorID(2, 0), {0, 1})
    with pytest.raises(SpaceMismatchError, match="an ActorID"):
        check_actor_id("00", {0})


def test_non_dict_mappings_are_copied() -> None:
    from types import MappingProxyType

    proxy = MappingProxyType({"k": 1})
    copied = check_info(proxy)
    assert copied == {"k": 1} and isinstance(copied, dict)
