"""core.space_codec: gymnasium spaces survive a JSON round trip; malformed documents are named."""

import json

import numpy as np
import pytest
from gymnasium import spaces

from maze_engine.core.errors import ConfigError
from maze_engine.core.space_codec import (
    space_from_json,
    space_to_json,
    spaces_dict_from_json,
    spaces_dict_to_json,
)

SPACES = [
    spaces.Box(-1.0, 1.0, shape=(3,), dtype=np.float32),
    spaces.Box(-np.inf, np.inf, shape=(2, 2), dtype=np.float64),
    spaces.Box(low=np.array([0.0, -np.inf], dtype=np.float32), high=np.array([1.0, 5.0], dtype=np.float32)),
    spaces.Box(0, 255, shape=(4, 4, 3), dtype=np.uint8),
    spaces.Discrete(5),
    spaces.Discrete(3, start=-1),
    spaces.MultiDiscrete([2, 3, 4]),
    spaces.MultiDiscrete(np.array([[2, 3], [4, 5]]), start=np.array([[1, 0], [0, 2]])),
    spaces.MultiBinary(6),
    spaces.MultiBinary([2, 3]),
    spaces.Tuple([spaces.Discrete(2), spaces.Box(0.0, 1.0, shape=(1,), dtype=np.float32)]),
    spaces.Dict({"b": spaces.Discrete(2), "a": spaces.Dict({"x": spaces.MultiBinary(2)})}),
]


@pytest.mark.parametrize("space", SPACES, ids=[repr(space)[:40] for space in SPACES])
def test_round_trip_through_strict_json(space: spaces.Space) -> None:
    text = json.dumps(space_to_json(space), allow_nan=False)
    restored = space_from_json(json.loads(text))
    assert restored == space
    assert type(restored) is type(space)
    if isinstance(space, spaces.Dict):
        assert isinstance(restored, spaces.Dict) and list(restored.spaces) == list(space.spaces)


def test_spaces_dict_keeps_step_key_types() -> None:
    data = json.loads(json.dumps(spaces_dict_to_json({0: spaces.Discrete(2), "place": spaces.Discrete(3)})))
    restored = spaces_dict_from_json(data, "action_spaces_dict")
    assert list(restored) == [0, "place"]


@pytest.mark.parametrize(("document", "message"), [
    ({"n": 3}, "'type' key"),
    ({"type": "Graph"}, r"space.type: expected Box"),
    ({"type": "Discrete"}, "missing the key 'n'"),
    ({"type": "Box", "shape": [2], "dtype": "float32", "low": "-big", "high": 1}, "space.low: expected a"),
    ({"type": "Box", "shape": [2], "dtype": "float32", "low": [0, 0, 0], "high": 1}, "bounds of shape"),
    ({"type": "Box", "shape": [2], "dtype": "no-such-dtype", "low": 0, "high": 1}, "invalid Box space"),
    ({"type": "Dict", "spaces": [["a", {"type": "Discrete"}]]}, r"space.a: Discrete space is missing"),
])
def test_malformed_documents_are_named(document: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        space_from_json(document)


def test_unsupported_space_is_named() -> None:
    with pytest.raises(ConfigError, match="got Text"):
        space_to_json(spaces.Text(5))
    with pytest.raises(ConfigError, match=r"steps\[0\].step_key"):
        spaces_dict_from_json([{"step_key": 1.5, "space": {}}], "steps")
