"""FlattenConcat nets: shapes for any batch dims, non_lin forms, construction from `_target_` dicts."""

import pytest
import torch
from torch import nn

from maze_engine import FlattenConcatPolicyNet, FlattenConcatStateValueNet, instantiate
from maze_engine.core.errors import ConfigError, SpaceMismatchError

OBS_SHAPES = {"vector": (4,), "image": (2, 3), "flag": ()}


def _observation(*batch: int) -> dict[str, torch.Tensor]:
    return {key: torch.randn(batch + shape) for key, shape in OBS_SHAPES.items()}


@pytest.mark.parametrize("batch", [(), (5,), (3, 2)])
def test_policy_net_heads_follow_logits_shapes(batch: tuple[int, ...]) -> None:
    net = FlattenConcatPolicyNet(OBS_SHAPES, {"move": (3,), "grid": (2, 4)}, hidden_units=[8, 8],
                                 non_lin="relu")
    logits = net(_observation(*batch))
    assert logits["move"].shape == batch + (3,)
    assert logits["grid"].shape == batch + (2, 4)


@pytest.mark.parametrize("batch", [(), (5,)])
def test_value_net_outputs_one_value(batch: tuple[int, ...]) -> None:
    net = FlattenConcatStateValueNet(OBS_SHAPES, hidden_units=[8], non_lin=nn.ELU)
    assert net(_observation(*batch))["value"].shape == batch + (1,)


@pytest.mark.parametrize("non_lin", [nn.Tanh, "torch.nn.Tanh", "tanh", "Tanh", nn.Tanh()])
def test_non_lin_forms(non_lin: object) -> None:
    net = FlattenConcatStateValueNet({"x": (2,)}, [4, 4], non_lin)
    assert isinstance(net.body.mlp[1], nn.Tanh) and isinstance(net.body.mlp[3], nn.Tanh)
    assert net.body.mlp[1] is not net.body.mlp[3]


def test_built_from_target_dict_as_in_seed_003() -> None:
    config = {"_target_": "maze.perception.models.built_in.flatten_concat.FlattenConcatPolicyNet",
              "non_lin": "torch.nn.Tanh", "hidden_units": [222, 222]}
    net = instantiate(config, nn.Module, obs_shapes={"observation": (4,)},
                      action_logits_shapes={"action": (2,)})
    assert isinstance(net, FlattenConcatPolicyNet)
    assert net.body.mlp[0].out_features == 222
    assert net({"observation": torch.zeros(4)})["action"].shape == (2,)


def test_initial_policy_is_near_uniform() -> None:
    net = FlattenConcatPolicyNet({"x": (4,)}, {"a": (3,)}, hidden_units=[64, 64])
    logits = net({"x": torch.randn(100, 4)})["a"]
    assert logits.abs().max() < 0.5


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"hidden_units": [0]}, "hidden_units"),
    ({"hidden_units": "big"}, "hidden_units"),
    ({"non_lin": 3}, "non_lin"),
    ({"non_lin": "torch.nn.NoSuchActivation"}, "non_lin"),
    ({"non_lin": "torch.nn.Linear"}, "non_lin"),
    ({"obs_shapes": {}}, "obs_shapes"),
    ({"obs_shapes": {"x": (-1,)}}, r"obs_shapes.x"),
])
def test_construction_mistakes_are_named(kwargs: dict, message: str) -> None:
    arguments = {"obs_shapes": {"x": (2,)}, "hidden_units": [4], "non_lin": "tanh", **kwargs}
    with pytest.raises(ConfigError, match=message):
        FlattenConcatStateValueNet(**arguments)


def test_missing_observation_key_is_named() -> None:
    net = FlattenConcatStateValueNet({"x": (2,), "y": (1,)}, [4])
    with pytest.raises(SpaceMismatchError, match="x_dict.y"):
        net({"x": torch.zeros(2)})
