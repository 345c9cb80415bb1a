"""TorchModelBlock: one net for single and batched inputs; argument forms of seed 004; shape errors."""

import pytest
import torch
from torch import nn

from maze_engine import TorchModelBlock
from maze_engine.core.errors import ConfigError, SpaceMismatchError


class TwoInputNet(nn.Module):
    """Dict-in, dict-out net over two keys, written for batched inputs only."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(4 + 6, 3)

    def forward(self, x_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        features = torch.cat([x_dict["a"], x_dict["b"].flatten(start_dim=-2)], dim=-1)
        logits = self.linear(features)
        return {"logits": logits, "value": logits.sum(-1, keepdim=True)}


def _block(**overrides: object) -> TorchModelBlock:
    arguments: dict = {"in_keys": ["a", "b"], "out_keys": ["logits", "value"], "in_shapes": [(4,), (2, 3)],
                       "in_num_dims": [2, 3], "out_num_dims": [2, 2], "net": TwoInputNet()}
    arguments.update(overrides)
    return TorchModelBlock(**arguments)


def test_batched_input_passes_through() -> None:
    output = _block()({"a": torch.zeros(5, 4), "b": torch.zeros(5, 2, 3), "ignored": torch.zeros(1)})
    assert output["logits"].shape == (5, 3) and output["value"].shape == (5, 1)


def test_single_input_gets_and_loses_a_batch_dimension() -> None:
    block = _block()
    a, b = torch.randn(4), torch.randn(2, 3)
    single = block({"a": a, "b": b})
    batched = block({"a": a.unsqueeze(0), "b": b.unsqueeze(0)})
    assert single["logits"].shape == (3,) and single["value"].shape == (1,)
    torch.testing.assert_close(single["logits"], batched["logits"][0])


def test_seed_004_scalar_arguments() -> None:
    """in_keys/out_keys as strings, in_shapes as one shape, in_num_dims as a one-entry list."""
    class LinearNet(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.linear = nn.Linear(4, 2)

        def forward(self, x_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
            return {"action": self.linear(x_dict["observation"])}

    block = TorchModelBlock(in_keys="observation", out_keys="action", in_shapes=(4,), in_num_dims=[2],
                            out_num_dims=2, net=LinearNet())
    assert block({"observation": torch.zeros(4)})["action"].shape == (2,)
    assert block({"observation": torch.zeros(7, 4)})["action"].shape == (7, 2)


def test_tensor_output_with_one_out_key_is_wrapped() -> None:
    class TensorNet(nn.Module):
        def forward(self, x_dict: dict[str, torch.Tensor]) -> torch.Tensor:
            return x_dict["x"] * 2

    block = TorchModelBlock("x", "y", (3,), 2, 2, TensorNet())
    torch.testing.assert_close(block({"x": torch.ones(3)})["y"], torch.full((3,), 2.0))


@pytest.mark.parametrize(("inputs", "message"), [
    ({"a": torch.zeros(5, 4)}, "block_input.b"),
    ({"a": torch.zeros(5, 5), "b": torch.zeros(5, 2, 3)}, r"ending in shape \(4,\)"),
    ({"a": torch.zeros(1, 5, 4), "b": torch.zeros(5, 2, 3)}, "at most 2 dimensions"),
    ({"a": torch.zeros(4), "b": torch.zeros(5, 2, 3)}, "batch dimensions of the other inputs"),
])
def test_input_mistakes_are_named(inputs: dict, message: str) -> None:
    with pytest.raises(SpaceMismatchError, match=message):
        _block()(inputs)


def test_output_mistakes_are_named() -> None:
    with pytest.raises(SpaceMismatchError, match="out_key 'missing'"):
        _block(out_keys=["missing", "value"])({"a": torch.zeros(2, 4), "b": torch.zeros(2, 2, 3)})
    with pytest.raises(SpaceMismatchError, match="3 dimensions"):
        _block(out_num_dims=3)({"a": torch.zeros(2, 4), "b": torch.zeros(2, 2, 3)})


@pytest.mark.parametrize(("overrides", "message"), [
    ({"in_shapes": [(4,)]}, "expected 2 shapes"),
    ({"in_num_dims": [2, 3, 4]}, "in_num_dims: expected 2 entries"),
    ({"in_num_dims": [2, 1]}, "fewer than the dimensions"),
    ({"net": "not a module"}, "torch.nn.Module"),
])
def test_construction_mistakes_are_named(overrides: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        _block(**overrides)
