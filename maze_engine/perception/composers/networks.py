"""Shared helpers of the composers: networks given per step, built from configs, checked by a dry run."""

import copy
import inspect
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from gymnasium import spaces
from torch import nn

from maze_engine.core.errors import ConfigError
from maze_engine.core.factory import TARGET_KEY, _plain_config, instantiate, resolve_target

StepKey = int | str

ACTION_LOGITS_KEYWORDS = ("action_logits_shapes", "action_logit_shapes")
"""Keywords a policy net may declare for its logits shapes: Maze's built-in nets use the first, many
hand-written nets (as in the Maze docs) the second. The composer passes whichever the net declares."""


def _is_config(entry: Any) -> bool:
    return isinstance(entry, Mapping | str | type)


def find_step_entry(entries: Mapping[Any, Any], step: StepKey, field: str) -> Any:
    """The entry for ``step``; YAML turns int step keys into strings, so ``"0"`` also matches step ``0``."""
    if step in entries:
        return entries[step]
    for key, value in entries.items():
        if str(key) == str(step):
            return value
    raise ConfigError(f"{field}: no entry for step {step!r}; expected keys {list(entries)}")


def entries_per_step(networks: Any, step_keys: Sequence[StepKey],
                     field: str = "networks") -> dict[StepKey, Any]:
    """Normalize ``networks`` (a list indexed like the steps, a mapping by step key, or one config for all
    steps) to one entry per step key."""
    networks = _plain_config(networks)
    if networks is None:
        raise ConfigError(f"{field}: expected a network (module or config) per step, got None")
    if isinstance(networks, nn.Module) or (isinstance(networks, Mapping) and TARGET_KEY in networks):
        networks = [networks]
    if isinstance(networks, Mapping):
        return {step: find_step_entry(networks, step, field) for step in step_keys}
    if isinstance(networks, Sequence) and not isinstance(networks, str):
        if len(networks) == 1 and len(step_keys) > 1 and _is_config(networks[0]):
            return {step: networks[0] for step in step_keys}
        if len(networks) != len(step_keys):
            raise ConfigError(f"{field}: expected {len(step_keys)} networks (one per step "
                              f"{list(step_keys)}), got {len(networks)}")
        return dict(zip(step_keys, networks, strict=True))
    if _is_config(networks):
        return {step: networks for step in step_keys}
    raise ConfigError(f"{field}: expected a list or a mapping of networks, got {type(networks).__name__}")


def _declared_parameters(entry: Any) -> set[str] | None:
    """Constructor parameter names of a config's target (None when it takes ``**kwargs`` or is unknown)."""
    target = entry
    if isinstance(entry, Mapping):
        target = entry.get(TARGET_KEY)
    if isinstance(target, str):
        target = resolve_target(target)
    try:
        parameters = inspect.signature(target).parameters
    except (TypeError, ValueError):
        return None
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
        return None
    return set(parameters)


def build_network(entry: Any, field: str, obs_shapes: dict[str, tuple[int, ...]],
                  action_logits_shapes: dict[str, Any] | None = None) -> nn.Module:
    """An nn.Module from an instance (as is) or a config built with the step's shapes as context."""
    if isinstance(entry, nn.Module):
        return entry
    if not _is_config(entry):
        raise ConfigError(f"{field}: expected a torch.nn.Module or a config with {TARGET_KEY}, "
                          f"got {type(entry).__name__}")
    context: dict[str, Any] = {"obs_shapes": obs_shapes}
    if action_logits_shapes is not None:
        declared = _declared_parameters(entry)
        keyword = next((name for name in ACTION_LOGITS_KEYWORDS if declared is None or name in declared),
                       ACTION_LOGITS_KEYWORDS[0])
        context[keyword] = action_logits_shapes
    try:
        return instantiate(entry, nn.Module, **context)
    except ConfigError as err:
        raise ConfigError(f"{field}: {err}") from err


def observation_shapes(space: spaces.Dict) -> dict[str, tuple[int, ...]]:
    """Per-key observation shapes of a Dict space, as nets receive them in ``obs_shapes``."""
    shapes = {}
    for key, sub in space.spaces.items():
        if sub.shape is None:
            raise ConfigError(f"observation_space.{key}: {type(sub).__name__} has no fixed shape; nets need "
                              "array-like observation spaces (Box, Discrete, MultiBinary, MultiDiscrete)")
        shapes[key] = tuple(int(n) for n in sub.shape)
    return shapes


def copies_per_agent(entry: Any, count: int, build: Callable[[Any, int], nn.Module],
                     field: str) -> list[nn.Module]:
    """One net per agent: a list gives them explicitly, a config is built per agent, an instance copied."""
    entry = _plain_config(entry)
    if isinstance(entry, Sequence) and not isinstance(entry, str):
        if len(entry) != count:
            raise ConfigError(f"{field}: expected {count} networks (one per agent), got {len(entry)}")
        return [build(item, agent) for agent, item in enumerate(entry)]
    if isinstance(entry, nn.Module):
        # Copies start from the same weights and train independently from then on.
        return [entry] + [copy.deepcopy(entry) for _ in range(count - 1)]
    return [build(entry, agent) for agent in range(count)]


def dry_run(net: nn.Module, obs_shapes: dict[str, tuple[int, ...]], field: str) -> dict[str, torch.Tensor]:
    """Run ``net`` once on a zero batch of two observations so shape mistakes surface at build time."""
    parameter = next(net.parameters(), None)
    device = parameter.device if parameter is not None else torch.device("cpu")
    batch = {key: torch.zeros((2,) + shape, device=device) for key, shape in obs_shapes.items()}
    was_training = net.training
    net.eval()
    try:
        with torch.no_grad():
            output = net(batch)
    except Exception as err:  # a user net may fail in any way; say which net and on what input
        raise ConfigError(f"{field}: {type(net).__name__} failed on a batch of observations with shapes "
                          f"{ {key: (2,) + shape for key, shape in obs_shapes.items()} }: {err}") from err
    finally:
        net.train(was_training)
    if not isinstance(output, Mapping):
        raise ConfigError(f"{field}: {type(net).__name__} must return a dict of tensors, "
                          f"got {type(output).__name__}")
    return dict(output)
