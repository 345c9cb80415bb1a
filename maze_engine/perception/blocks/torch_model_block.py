"""TorchModelBlock: wraps a dict-in, dict-out torch net with key selection and shape normalization.

Nets are written for batched input (``[batch, *shape]``). The block adds the missing leading dimensions to
inputs with fewer dimensions than ``in_num_dims`` and removes them again from the outputs, so the same net
serves one observation and a batch of them.
"""

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from maze_engine.core.errors import ConfigError, SpaceMismatchError


def _as_list(value: Any, field: str, length: int | None = None) -> list[Any]:
    """A scalar becomes a list of one (or of ``length``); lists are checked against ``length``."""
    if isinstance(value, str | int) or not isinstance(value, Sequence):
        items = [value]
    else:
        items = list(value)
    if length is not None and len(items) == 1 and length > 1:
        items = items * length
    if length is not None and len(items) != length:
        raise ConfigError(f"{field}: expected {length} entries (one per key), got {len(items)}")
    return items


def _as_shapes(in_shapes: Any, count: int) -> list[tuple[int, ...]]:
    """One shape per input key; a single flat sequence of ints is one shape."""
    if isinstance(in_shapes, Sequence) and all(isinstance(n, int) for n in in_shapes):
        shapes = [tuple(int(n) for n in in_shapes)]
    elif isinstance(in_shapes, Sequence):
        shapes = []
        for shape in in_shapes:
            if not isinstance(shape, Sequence) or not all(isinstance(n, int) for n in shape):
                raise ConfigError(f"in_shapes: expected a shape (sequence of ints) per key, got {shape!r}")
            shapes.append(tuple(int(n) for n in shape))
    else:
        raise ConfigError(f"in_shapes: expected a shape or a list of shapes, got {in_shapes!r}")
    if len(shapes) != count:
        raise ConfigError(f"in_shapes: expected {count} shapes (one per in_key), got {len(shapes)}")
    return shapes


class TorchModelBlock(nn.Module):
    """Runs ``net`` on the ``in_keys`` of a tensor dict and returns its ``out_keys``, batched or not.

    ``in_shapes`` are the per-sample input shapes; ``in_num_dims`` and ``out_num_dims`` the number of
    dimensions of inputs and outputs *with* the batch dimension. Scalars and single shapes stand for one key.

    >>> block = TorchModelBlock(in_keys="observation", out_keys="action", in_shapes=(4,), in_num_dims=2,
    ...                         out_num_dims=2, net=_LinearDictNet())
    >>> block({"observation": torch.zeros(4)})["action"].shape
    torch.Size([2])
    """

    def __init__(self, in_keys: str | Sequence[str], out_keys: str | Sequence[str], in_shapes: Any,
                 in_num_dims: int | Sequence[int], out_num_dims: int | Sequence[int], net: nn.Module) -> None:
        super().__init__()
        self.in_keys: list[str] = [str(key) for key in _as_list(in_keys, "in_keys")]
        self.out_keys: list[str] = [str(key) for key in _as_list(out_keys, "out_keys")]
        self.in_shapes = _as_shapes(in_shapes, len(self.in_keys))
        self.in_num_dims = [int(n) for n in _as_list(in_num_dims, "in_num_dims", len(self.in_keys))]
        self.out_num_dims = [int(n) for n in _as_list(out_num_dims, "out_num_dims", len(self.out_keys))]
        for key, shape, num_dims in zip(self.in_keys, self.in_shapes, self.in_num_dims, strict=True):
            if num_dims < len(shape):
                raise ConfigError(f"in_num_dims: {num_dims} for key {key!r} is fewer than the dimensions of "
                                  f"its shape {shape}")
        if not isinstance(net, nn.Module):
            raise ConfigError(f"net: expected a torch.nn.Module, got {type(net).__name__}")
        self.net = net

    def _added_dims(self, block_input: dict[str, torch.Tensor]) -> int:
        """How many leading dimensions the inputs lack; the same for every key."""
        added: int | None = None
        for key, shape, num_dims in zip(self.in_keys, self.in_shapes, self.in_num_dims, strict=True):
            if key not in block_input:
                raise SpaceMismatchError(f"block_input.{key}", f"a tensor for every in_key {self.in_keys}",
                                         f"keys {sorted(block_input)}")
            tensor = block_input[key]
            if shape and tuple(tensor.shape[max(tensor.dim() - len(shape), 0):]) != shape:
                raise SpaceMismatchError(f"block_input.{key}", f"a tensor ending in shape {shape}",
                                         f"shape {tuple(tensor.shape)}")
            missing = num_dims - tensor.dim()
            if missing < 0:
                raise SpaceMismatchError(f"block_input.{key}", f"at most {num_dims} dimensions",
                                         f"shape {tuple(tensor.shape)}")
            if added is not None and missing != added:
                raise SpaceMismatchError(f"block_input.{key}", "the batch dimensions of the other inputs",
                                         f"shape {tuple(tensor.shape)}")
            added = missing
        return added or 0

    def forward(self, block_input: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Normalize input shapes, run the net, restore the caller's shapes on its outputs."""
        added = self._added_dims(block_input)
        net_input = {key: block_input[key] for key in self.in_keys}
        if added:
            net_input = {key: tensor.reshape((1,) * added + tuple(tensor.shape))
                         for key, tensor in net_input.items()}
        output = self.net(net_input)
        if isinstance(output, torch.Tensor):
            if len(self.out_keys) != 1:
                raise SpaceMismatchError("net output", f"a dict with keys {self.out_keys}", "a single tensor")
            output = {self.out_keys[0]: output}
        result = {}
        for key, num_dims in zip(self.out_keys, self.out_num_dims, strict=True):
            if key not in output:
                raise SpaceMismatchError(f"{type(self.net).__name__} output", f"a tensor for out_key {key!r}",
                                         f"keys {sorted(output)}")
            tensor = output[key]
            if tensor.dim() != num_dims:
                raise SpaceMismatchError(f"{type(self.net).__name__} output.{key}", f"{num_dims} dimensions",
                                         f"shape {tuple(tensor.shape)}")
            if added:
                if any(size != 1 for size in tensor.shape[:added]):
                    raise SpaceMismatchError(f"{type(self.net).__name__} output.{key}",
                                             "a batch of one for an unbatched input",
                                             f"shape {tuple(tensor.shape)}")
                tensor = tensor.reshape(tensor.shape[added:])
            result[key] = tensor
        return result


class _LinearDictNet(nn.Module):
    """A tiny dict net for the docstring example."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(4, 2)

    def forward(self, x_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {"action": self.linear(x_dict["observation"])}
