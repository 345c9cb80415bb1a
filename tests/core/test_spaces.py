"""to_space_sample, to_plain and flat_dim over every supported space, valid and invalid values."""

import numpy as np
import pytest
from gymnasium import spaces

from maze_engine import SpaceMismatchError
from maze_engine.core.spaces import flat_dim, to_plain, to_space_sample

BOX = spaces.Box(low=-1.0, high=1.0, shape=(2,), dtype=np.float32)
INT_BOX = spaces.Box(low=0, high=255, shape=(2,), dtype=np.uint8)
DICT = spaces.Dict({"position": BOX, "mode": spaces.Discrete(3),
                    "inner": spaces.Dict({"flags": spaces.MultiBinary(2)})})
TUPLE = spaces.Tuple([spaces.Discrete(2), BOX])


@pytest.mark.parametrize(("space", "value", "expected"), [
    (spaces.Discrete(3), 2, 2),
    (spaces.Discrete(3), np.int32(1), 1),
    (spaces.Discrete(3), np.array(0), 0),
    (spaces.Discrete(3, start=-1), -1, -1),
    (BOX, [0.5, -0.25], [0.5, -0.25]),
    (BOX, np.array([0.5, 0.0], dtype=np.float64), [0.5, 0.0]),
    (INT_BOX, [255.0, 0.0], [255, 0]),
    (spaces.MultiDiscrete([2, 3]), [1, 2], [1, 2]),
    (spaces.MultiDiscrete([2, 3], start=[1, 1]), [2, 3], [2, 3]),
    (spaces.MultiBinary(3), [0, 1, 1], [0, 1, 1]),
    (spaces.MultiBinary([2, 2]), [[0, 1], [1, 0]], [[0, 1], [1, 0]]),
])
def test_valid_values_become_samples(space, value, expected):
    sample = to_space_sample(space, value, "obs")
    assert space.contains(sample)
    assert np.asarray(sample).tolist() == expected


def test_dict_and_tuple_samples():
    value = {"position": [0.1, 0.2], "mode": 1, "inner": {"flags": [1, 0]}}
    sample = to_space_sample(DICT, value, "state")
    assert DICT.contains(sample)
    assert sample["position"].dtype == np.float32 and sample["inner"]["flags"].dtype == np.int8
    sample = to_space_sample(TUPLE, [1, [0.5, 0.5]], "pair")
    assert isinstance(sample, tuple) and TUPLE.contains(sample)


@pytest.mark.parametrize(("space", "value", "field", "expected"), [
    (spaces.Discrete(3), 3, "obs", "an integer in [0, 3)"),
    (spaces.Discrete(3), -1, "obs", "an integer in [0, 3)"),
    (spaces.Discrete(3), 1.0, "obs", "an integer"),
    (spaces.Discrete(3), True, "obs", "an integer"),
    (spaces.Discrete(3), "1", "obs", "an integer"),
    (BOX, [1, 2, 3], "obs", "shape (2,)"),
    (BOX, [[1], [2]], "obs", "shape (2,)"),
    (BOX, [[1, 2], [3]], "obs", "an array of shape (2,)"),
    (BOX, "ab", "obs", "numbers of dtype float32"),
    (BOX, None, "obs", "numbers"),
    (BOX, [np.nan, 0], "obs", "finite numbers"),
    (BOX, [1e40, 0], "obs", "finite numbers"),
    (INT_BOX, [1.5, 2.0], "obs", "integers"),
    (INT_BOX, [300, 0], "obs", "integers in [0, 255]"),
    (INT_BOX, [-1, 0], "obs", "integers in [0, 255]"),
    (spaces.MultiDiscrete([2, 3]), [2, 0], "obs", "values below [2, 3]"),
    (spaces.MultiDiscrete([2, 3]), [-1, 0], "obs", "values below"),
    (spaces.MultiDiscrete([2, 3]), [1], "obs", "shape (2,)"),
    (spaces.MultiBinary(3), [0, 2, 1], "obs", "only 0 and 1"),
    (spaces.MultiBinary(2), [256, 1], "obs", "integers in [-128, 127]"),
    (DICT, {"position": [0, 0], "mode": 0}, "state.inner", "key is missing"),
    (DICT, {"position": [0, 0], "mode": 0, "inner": {"flags": [0, 0]}, "extra": 1}, "state", "'extra'"),
    (DICT, [1, 2], "state", "a map with keys"),
    (DICT, {"position": [0, 0], "mode": 7, "inner": {"flags": [0, 0]}}, "state.mode", "[0, 3)"),
    (DICT, {"position": [0, 0], "mode": 0, "inner": {"flags": [0, 5]}}, "state.inner.flags", "only 0 and 1"),
    (TUPLE, [1], "state", "a list of 2 items"),
    (TUPLE, "ab", "state", "a list of 2 items"),
    (TUPLE, [1, [0.5]], "state[1]", "shape (2,)"),
    (spaces.Text(4), "abc", "state", "a supported space"),
])
def test_invalid_values_name_the_field(space, value, field, expected):
    root = field.split(".")[0].split("[")[0]
    with pytest.raises(SpaceMismatchError) as error:
        to_space_sample(space, value, root)
    assert error.value.field == field
    assert expected in error.value.expected or expected in str(error.value)
    assert str(error.value).startswith(f"{field}: expected")


def test_to_plain_gives_python_values():
    sample = {"a": np.array([[1, 2]], dtype=np.int8), "b": (np.float32(0.5), np.bool_(True)),
              "c": [np.int64(3)]}
    plain = to_plain(sample)
    assert plain == {"a": [[1, 2]], "b": [0.5, True], "c": [3]}
    assert type(plain["b"][1]) is bool and type(plain["c"][0]) is int


@pytest.mark.parametrize(("space", "expected"), [
    (spaces.Discrete(5), 5), (BOX, 2), (spaces.MultiBinary(3), 3), (spaces.MultiDiscrete([2, 3]), 5),
    (DICT, 2 + 3 + 2), (TUPLE, 4),
])
def test_flat_dim(space, expected):
    assert flat_dim(space) == expected
