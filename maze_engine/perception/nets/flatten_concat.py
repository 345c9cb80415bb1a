"""FlattenConcat nets: flatten every observation key, concatenate, run an MLP, one linear head per output.

They accept any number of leading batch dimensions, so they work on a single observation, a batch, or a
``[time, env]`` rollout without reshaping. Weights are initialised orthogonally (gain sqrt(2) in hidden
layers, 0.01 for policy heads so the initial policy is near uniform, 1.0 for the value head), the
initialisation that on-policy methods are usually tuned with.
"""

import copy
import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from maze_engine.core.errors import ConfigError, SpaceMismatchError
from maze_engine.core.factory import resolve_target

_SHORT_NON_LINS = {"tanh": nn.Tanh, "relu": nn.ReLU, "elu": nn.ELU, "selu": nn.SELU, "gelu": nn.GELU,
                   "leaky_relu": nn.LeakyReLU, "sigmoid": nn.Sigmoid, "silu": nn.SiLU}


def resolve_non_lin(non_lin: Any) -> type[nn.Module] | nn.Module:
    """An activation from a module class, a dotted path ('torch.nn.Tanh'), a short name or an instance."""
    if isinstance(non_lin, str):
        short = _SHORT_NON_LINS.get(non_lin.lower())
        if short is not None:
            return short
        try:
            non_lin = resolve_target(non_lin)
        except ConfigError as err:
            raise ConfigError(f"non_lin: expected an activation like 'torch.nn.Tanh' or one of "
                              f"{sorted(_SHORT_NON_LINS)}, got {non_lin!r}") from err
    if isinstance(non_lin, nn.Module) or (isinstance(non_lin, type) and issubclass(non_lin, nn.Module)):
        return non_lin
    raise ConfigError(f"non_lin: expected a torch.nn.Module class or its dotted path, got {non_lin!r}")


def _make_activation(non_lin: type[nn.Module] | nn.Module) -> nn.Module:
    if isinstance(non_lin, nn.Module):
        return copy.deepcopy(non_lin)
    try:
        return non_lin()
    except TypeError as err:
        raise ConfigError(f"non_lin: {non_lin.__name__} cannot be built without arguments; expected an "
                          f"activation such as torch.nn.Tanh ({err})") from err


def _shape_dict(shapes: Any, field: str) -> dict[str, tuple[int, ...]]:
    if not isinstance(shapes, Mapping) or not shapes:
        raise ConfigError(f"{field}: expected a non-empty mapping of key -> shape, got {shapes!r}")
    result = {}
    for key, shape in shapes.items():
        if isinstance(shape, int):
            shape = (shape,)
        if not isinstance(shape, Sequence) or not all(isinstance(n, int) and n >= 0 for n in shape):
            raise ConfigError(f"{field}.{key}: expected a shape (sequence of non-negative ints), "
                              f"got {shape!r}")
        result[str(key)] = tuple(int(n) for n in shape)
    return result


def _hidden_units(hidden_units: Any) -> list[int]:
    if isinstance(hidden_units, int):
        hidden_units = [hidden_units]
    if not isinstance(hidden_units, Sequence) or not all(isinstance(n, int) and n > 0 for n in hidden_units):
        raise ConfigError(f"hidden_units: expected a list of positive layer sizes, got {hidden_units!r}")
    return [int(n) for n in hidden_units]


class FlattenConcatBody(nn.Module):
    """Flattens and concatenates the observation keys and runs them through an MLP."""

    def __init__(self, obs_shapes: Any, hidden_units: Any, non_lin: Any) -> None:
        super().__init__()
        self.obs_shapes = _shape_dict(obs_shapes, "obs_shapes")
        activation = resolve_non_lin(non_lin)
        layers: list[nn.Module] = []
        width = sum(max(math.prod(shape), 1) for shape in self.obs_shapes.values())
        for units in _hidden_units(hidden_units):
            linear = nn.Linear(width, units)
            nn.init.orthogonal_(linear.weight, gain=math.sqrt(2.0))
            nn.init.zeros_(linear.bias)
            layers += [linear, _make_activation(activation)]
            width = units
        self.mlp = nn.Sequential(*layers)
        self.out_features = width

    def forward(self, x_dict: Mapping[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Size]:
        """The MLP features and the batch shape (leading dimensions) of the inputs."""
        parts = []
        batch_shape: torch.Size | None = None
        for key, shape in self.obs_shapes.items():
            if key not in x_dict:
                raise SpaceMismatchError(f"x_dict.{key}", f"the observation keys {sorted(self.obs_shapes)}",
                                         f"keys {sorted(x_dict)}")
            tensor = x_dict[key]
            if not tensor.is_floating_point():
                tensor = tensor.float()
            batch_shape = tensor.shape[:tensor.dim() - len(shape)]
            parts.append(tensor.reshape(batch_shape + (-1,)))
        assert batch_shape is not None
        features = parts[0] if len(parts) == 1 else torch.cat(parts, dim=-1)
        return self.mlp(features), batch_shape


def _head(in_features: int, shape: tuple[int, ...], gain: float) -> nn.Linear:
    head = nn.Linear(in_features, max(math.prod(shape), 1))
    nn.init.orthogonal_(head.weight, gain=gain)
    nn.init.zeros_(head.bias)
    return head


class FlattenConcatPolicyNet(nn.Module):
    """Policy net: observation dict -> one logits tensor per action key, shaped like ``action_logits_shapes``.

    >>> net = FlattenConcatPolicyNet({"observation": (4,)}, {"action": (2,)}, hidden_units=[16],
    ...                              non_lin="tanh")
    >>> net({"observation": torch.zeros(3, 4)})["action"].shape
    torch.Size([3, 2])
    """

    def __init__(self, obs_shapes: Mapping[str, Sequence[int]],
                 action_logits_shapes: Mapping[str, Sequence[int]],
                 hidden_units: Sequence[int] = (256, 256), non_lin: Any = nn.Tanh) -> None:
        super().__init__()
        self.body = FlattenConcatBody(obs_shapes, hidden_units, non_lin)
        self.action_logits_shapes = _shape_dict(action_logits_shapes, "action_logits_shapes")
        self.heads = nn.ModuleDict({key: _head(self.body.out_features, shape, gain=0.01)
                                    for key, shape in self.action_logits_shapes.items()})

    def forward(self, x_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        features, batch_shape = self.body(x_dict)
        return {key: self.heads[key](features).reshape(batch_shape + shape)
                for key, shape in self.action_logits_shapes.items()}


class FlattenConcatStateValueNet(nn.Module):
    """State-value net: observation dict -> ``{"value": tensor of shape [*batch, 1]}``.

    >>> net = FlattenConcatStateValueNet({"observation": (4,)}, hidden_units=[16], non_lin="torch.nn.ReLU")
    >>> net({"observation": torch.zeros(3, 4)})["value"].shape
    torch.Size([3, 1])
    """

    def __init__(self, obs_shapes: Mapping[str, Sequence[int]], hidden_units: Sequence[int] = (256, 256),
                 non_lin: Any = nn.Tanh) -> None:
        super().__init__()
        self.body = FlattenConcatBody(obs_shapes, hidden_units, non_lin)
        self.value_head = _head(self.body.out_features, (1,), gain=1.0)

    def forward(self, x_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        features, _ = self.body(x_dict)
        return {"value": self.value_head(features)}
