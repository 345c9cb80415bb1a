"""DistributionMapper: picks the distribution for every key of a Dict action space.

Defaults follow the space type (Discrete -> categorical, Box -> diagonal Gaussian, MultiBinary ->
Bernoulli, MultiDiscrete -> multi-categorical, nested Dict -> dict distribution).
``distribution_mapper_config`` overrides them, per space type or per action key::

    [{"action_space": gymnasium.spaces.Box, "distribution": SquashedGaussianProbabilityDistribution},
     {"action_head": "steer", "distribution": "maze_engine.DiagonalGaussianProbabilityDistribution"}]

Per-key entries win over per-type entries; among per-type entries the last matching one wins.
"""

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from gymnasium import spaces

from maze_engine.core.errors import ConfigError, SpaceMismatchError
from maze_engine.core.factory import _plain_config, resolve_target
from maze_engine.perception.distributions.base import ProbabilityDistribution
from maze_engine.perception.distributions.bernoulli import BernoulliProbabilityDistribution
from maze_engine.perception.distributions.categorical import CategoricalProbabilityDistribution
from maze_engine.perception.distributions.dict_distribution import DictProbabilityDistribution
from maze_engine.perception.distributions.gaussian import DiagonalGaussianProbabilityDistribution
from maze_engine.perception.distributions.multi_categorical import MultiCategoricalProbabilityDistribution

DEFAULT_DISTRIBUTIONS: tuple[tuple[type[spaces.Space], type[ProbabilityDistribution]], ...] = (
    (spaces.Discrete, CategoricalProbabilityDistribution),
    (spaces.Box, DiagonalGaussianProbabilityDistribution),
    (spaces.MultiBinary, BernoulliProbabilityDistribution),
    (spaces.MultiDiscrete, MultiCategoricalProbabilityDistribution),
)
"""Space type -> distribution used when the config names none."""

LogitsShape = tuple[int, ...] | dict[str, Any]


def _resolve_space_class(value: Any, field: str) -> type[spaces.Space]:
    """A space class from a class, a dotted path (``gym.`` read as ``gymnasium.``) or a bare name."""
    if isinstance(value, str):
        path = value
        if path.startswith("gym."):
            path = "gymnasium." + path[len("gym."):]
        elif "." not in path:
            path = f"gymnasium.spaces.{path}"
        try:
            value = resolve_target(path)
        except ConfigError as err:
            raise ConfigError(f"{field}: expected a gymnasium space class or its path, "
                              f"got {value!r}") from err
    if not (isinstance(value, type) and issubclass(value, spaces.Space)):
        raise ConfigError(f"{field}: expected a gymnasium space class (e.g. gymnasium.spaces.Box), "
                          f"got {value!r}")
    return value


def _resolve_distribution_class(value: Any, field: str) -> type[ProbabilityDistribution]:
    if isinstance(value, str):
        value = resolve_target(value)
    if not (isinstance(value, type) and issubclass(value, ProbabilityDistribution)):
        raise ConfigError(f"{field}: expected a ProbabilityDistribution class or its dotted path, "
                          f"got {value!r}")
    return value


class DistributionMapper:
    """Maps each action key of ``action_space`` to a distribution class; builds distributions from logits."""

    def __init__(self, action_space: spaces.Space, distribution_mapper_config: Any = None) -> None:
        if not isinstance(action_space, spaces.Dict):
            raise ConfigError(f"action_space: expected a gymnasium Dict space, "
                              f"got {type(action_space).__name__}")
        self.action_space = action_space
        self.distribution_mapper_config = self._parse_config(distribution_mapper_config)
        self._type_overrides = [(entry["action_space"], entry["distribution"])
                                for entry in self.distribution_mapper_config if "action_space" in entry]
        self._key_overrides = {entry["action_head"]: entry["distribution"]
                               for entry in self.distribution_mapper_config if "action_head" in entry}
        self._distributions: dict[str, Any] = self._assign(action_space, prefix="")
        unused = sorted(set(self._key_overrides) - set(self._all_keys(action_space, "")))
        if unused:
            raise ConfigError(f"distribution_mapper_config.action_head: {unused[0]!r} is not an action key; "
                              f"expected one of {sorted(self._all_keys(action_space, ''))}")

    @staticmethod
    def _parse_config(config: Any) -> list[dict[str, Any]]:
        config = _plain_config(config)
        if config is None or (isinstance(config, Mapping) and not config):
            return []
        if not isinstance(config, Sequence) or isinstance(config, str):
            raise ConfigError("distribution_mapper_config: expected a list of {action_space|action_head, "
                              f"distribution}} mappings, got {type(config).__name__}")
        parsed: list[dict[str, Any]] = []
        for index, entry in enumerate(config):
            field = f"distribution_mapper_config[{index}]"
            if not isinstance(entry, Mapping) or "distribution" not in entry:
                raise ConfigError(f"{field}: expected a mapping with a 'distribution' key, got {entry!r}")
            if ("action_space" in entry) == ("action_head" in entry):
                raise ConfigError(f"{field}: expected exactly one of 'action_space' and 'action_head', "
                                  f"got keys {sorted(entry)}")
            unknown = sorted(set(entry) - {"action_space", "action_head", "distribution"})
            if unknown:
                raise ConfigError(f"{field}: unexpected key {unknown[0]!r}; expected action_space or "
                                  "action_head, and distribution")
            distribution = _resolve_distribution_class(entry["distribution"], f"{field}.distribution")
            if "action_space" in entry:
                space_class = _resolve_space_class(entry["action_space"], f"{field}.action_space")
                parsed.append({"action_space": space_class, "distribution": distribution})
            else:
                parsed.append({"action_head": str(entry["action_head"]), "distribution": distribution})
        return parsed

    def _all_keys(self, space: spaces.Dict, prefix: str) -> list[str]:
        keys = []
        for key, sub in space.spaces.items():
            keys.append(prefix + key)
            if isinstance(sub, spaces.Dict):
                keys.extend(self._all_keys(sub, f"{prefix}{key}."))
        return keys

    def _assign(self, space: spaces.Dict, prefix: str) -> dict[str, Any]:
        """Distribution class (or nested dict of them) per key, validated against each sub-space."""
        assigned: dict[str, Any] = {}
        for key, sub in space.spaces.items():
            path = prefix + key
            distribution = self._key_overrides.get(path)
            if distribution is None and isinstance(sub, spaces.Dict):
                assigned[key] = self._assign(sub, f"{path}.")
                continue
            if distribution is None:
                for space_class, candidate in self._type_overrides:
                    if isinstance(sub, space_class):
                        distribution = candidate
            if distribution is None:
                distribution = next((dist for kind, dist in DEFAULT_DISTRIBUTIONS if isinstance(sub, kind)),
                                    None)
            if distribution is None:
                raise ConfigError(f"action_space.{path}: no distribution for {type(sub).__name__}; add a "
                                  "distribution_mapper_config entry for it")
            try:
                distribution.required_logits_shape(sub)
            except ConfigError as err:
                raise ConfigError(f"action_space.{path}: {err}") from err
            assigned[key] = distribution
        return assigned

    def _lookup(self, action_key: str) -> tuple[Any, spaces.Space]:
        node: Any = self._distributions
        space: spaces.Space = self.action_space
        for part in action_key.split("."):
            if not isinstance(node, dict) or part not in node:
                raise ConfigError(f"action_key: {action_key!r} is not an action key; expected one of "
                                  f"{sorted(self._all_keys(self.action_space, ''))}")
            node = node[part]
            assert isinstance(space, spaces.Dict)
            space = space.spaces[part]
        return node, space

    def distribution_class(self, action_key: str) -> type[ProbabilityDistribution]:
        """The distribution class used for ``action_key`` (dotted for nested Dict spaces)."""
        node, _ = self._lookup(action_key)
        if isinstance(node, dict):
            raise ConfigError(f"action_key: {action_key!r} is a nested Dict space; name one of its keys")
        return node

    def required_logits_shape(self, action_key: str) -> LogitsShape:
        """Shape of the logits the net must output for ``action_key`` (a dict of shapes for a nested Dict)."""
        node, space = self._lookup(action_key)
        return self._shapes(node, space)

    def _shapes(self, node: Any, space: spaces.Space) -> LogitsShape:
        if isinstance(node, dict):
            assert isinstance(space, spaces.Dict)
            return {key: self._shapes(sub, space.spaces[key]) for key, sub in node.items()}
        return node.required_logits_shape(space)

    def required_logits_shapes(self) -> dict[str, LogitsShape]:
        """Logits shape for every top-level action key."""
        return {key: self.required_logits_shape(key) for key in self.action_space.spaces}

    def logits_dict_to_distribution(self, logits_dict: Mapping[str, Any],
                                    temperature: float = 1.0) -> DictProbabilityDistribution:
        """Build the joint distribution from the net's logits (one entry per action key)."""
        return self._build(self._distributions, self.action_space, logits_dict, temperature, "logits")

    def _build(self, node: dict[str, Any], space: spaces.Dict, logits_dict: Mapping[str, Any],
               temperature: float, field: str) -> DictProbabilityDistribution:
        parts: dict[str, Any] = {}
        for key, distribution in node.items():
            if key not in logits_dict:
                raise SpaceMismatchError(f"{field}.{key}", "logits for every action key",
                                         f"keys {sorted(logits_dict)}")
            logits = logits_dict[key]
            if isinstance(distribution, dict):
                if not isinstance(logits, Mapping):
                    raise SpaceMismatchError(f"{field}.{key}", "a dict of logits for a nested Dict space",
                                             type(logits).__name__)
                sub_space = space.spaces[key]
                assert isinstance(sub_space, spaces.Dict)
                parts[key] = self._build(distribution, sub_space, logits, temperature, f"{field}.{key}")
            else:
                if not isinstance(logits, torch.Tensor):
                    raise SpaceMismatchError(f"{field}.{key}", "a torch.Tensor", type(logits).__name__)
                parts[key] = distribution(logits, space.spaces[key], temperature)
        return DictProbabilityDistribution(parts)

    def __repr__(self) -> str:
        return f"DistributionMapper({self._distributions})"
