"""TorchPolicy: torch networks plus distribution mappers acting as a StructuredPolicy.

Acting (``compute_action``/``compute_actions``) converts numpy observations to tensors, runs one forward pass
without autograd and returns numpy actions that fit the action space. Trainers use the tensor API
(``compute_logits_dict``, ``distribution``) and the usual module methods (``parameters``, ``state_dict``...).
Saving and loading run directories lives in ``maze_engine.policies.torch_io``.
"""

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from gymnasium import spaces
from torch import nn

from maze_engine.core.actor_id import ActorID
from maze_engine.core.errors import ConfigError, SpaceMismatchError
from maze_engine.perception.distributions.dict_distribution import DictProbabilityDistribution
from maze_engine.perception.distributions.mapper import DistributionMapper
from maze_engine.perception.torch_networks import TorchNetworks
from maze_engine.policies.policy import StructuredPolicy

StepKey = int | str
NetworkKey = StepKey | tuple[StepKey, int]
"""A step key, or ``(step_key, agent_id)`` for steps whose agents have separate nets."""


def network_name(key: NetworkKey) -> str:
    """The ModuleDict name of a network key (names are strings; they also key the saved state dict)."""
    if isinstance(key, tuple):
        return f"{key[0]}_agent{key[1]}"
    return str(key)


class ActionConverter:
    """Turns batched action tensors into numpy arrays that fit ``space`` (Box clipped, dtypes cast).

    A plain class rather than closures, so a TorchPolicy stays picklable for subprocess rollouts.
    """

    def __init__(self, space: spaces.Space) -> None:
        self.children = ({key: ActionConverter(sub) for key, sub in space.spaces.items()}
                         if isinstance(space, spaces.Dict) else None)
        self.dtype = np.dtype(space.dtype) if space.dtype is not None else np.dtype(np.float32)
        self.bounds: tuple[np.ndarray, np.ndarray] | None = None
        # Gaussian samples are unbounded; clip so the env only ever sees valid actions.
        if isinstance(space, spaces.Box):
            unbounded = bool(np.isinf(space.low).all() and np.isinf(space.high).all())
            self.bounds = None if unbounded else (space.low, space.high)

    def __call__(self, actions: Any) -> Any:
        if self.children is not None:
            return {key: convert(actions[key]) for key, convert in self.children.items()}
        array = actions.detach().cpu().numpy()
        if self.bounds is not None:
            array = np.clip(array, *self.bounds)
        return array.astype(self.dtype, copy=False)


def _split_batch(tree: Mapping[str, Any], count: int) -> list[dict[str, Any]]:
    """Batched action arrays -> one action dict per batch entry (column by column: the fast way in Python)."""
    items: list[dict[str, Any]] = [{} for _ in range(count)]
    for key, value in tree.items():
        column = _split_batch(value, count) if isinstance(value, Mapping) else list(value)
        for item, entry in zip(items, column, strict=True):
            item[key] = entry
    return items


class TorchPolicy(TorchNetworks, StructuredPolicy):
    """A StructuredPolicy over torch nets: one net (and distribution mapper) per step key.

    ``networks`` maps step keys to nets that take a dict of observation tensors and return a dict of logits
    (one per action key). Steps whose agents have separate nets use ``(step_key, agent_id)`` keys instead.
    ``distribution_mapper`` is one mapper for every step or a mapping step key -> mapper.
    """

    reports_log_probs = True
    """``compute_actions`` fills ``log_probs_out`` (``act_batch`` asks for it when recording)."""

    def __init__(self, networks: Mapping[NetworkKey, nn.Module],
                 distribution_mapper: DistributionMapper | Mapping[StepKey, DistributionMapper],
                 device: str | torch.device = "cpu",
                 observation_spaces_dict: Mapping[StepKey, spaces.Dict] | None = None) -> None:
        if not networks:
            raise ConfigError("networks: expected at least one network, got an empty mapping")
        self._network_names: dict[NetworkKey, str] = {}
        modules: dict[str, nn.Module] = {}
        for key, net in networks.items():
            if not isinstance(net, nn.Module):
                raise ConfigError(f"networks[{key!r}]: expected a torch.nn.Module, got {type(net).__name__}")
            name = network_name(key)
            if name in modules:
                raise ConfigError(f"networks: the keys of two networks both read {name!r}")
            self._network_names[key] = name
            modules[name] = net
        self.networks = nn.ModuleDict(modules)
        self.step_keys: list[StepKey] = list(dict.fromkeys(
            key[0] if isinstance(key, tuple) else key for key in networks))
        if isinstance(distribution_mapper, DistributionMapper):
            self.distribution_mappers = {step: distribution_mapper for step in self.step_keys}
        else:
            missing = [step for step in self.step_keys if step not in distribution_mapper]
            if missing:
                raise ConfigError(f"distribution_mapper: no mapper for step {missing[0]!r}")
            self.distribution_mappers = {step: distribution_mapper[step] for step in self.step_keys}
        self.observation_spaces_dict = dict(observation_spaces_dict) if observation_spaces_dict else None
        self._converters = {step: ActionConverter(mapper.action_space)
                            for step, mapper in self.distribution_mappers.items()}
        self.device = torch.device(device)
        self._generator: torch.Generator | None = None
        self._seed: int | None = None
        self.networks.to(self.device)

    # -- structure ------------------------------------------------------------------------------------------

    @property
    def action_spaces_dict(self) -> dict[StepKey, spaces.Dict]:
        """The action space of each step (from its distribution mapper)."""
        return {step: mapper.action_space for step, mapper in self.distribution_mappers.items()}

    def _step_key(self, actor_id: ActorID | None) -> StepKey:
        if actor_id is None:
            return self.step_keys[0]
        if actor_id.step_key not in self.distribution_mappers:
            raise ConfigError(f"actor_id.step_key: expected one of {self.step_keys}, "
                              f"got {actor_id.step_key!r}")
        return actor_id.step_key

    def network(self, actor_id: ActorID | None = None) -> nn.Module:
        """The net that acts for ``actor_id`` (its own net for separate-agent steps, else the step's net)."""
        step = self._step_key(actor_id)
        agent_key = (step, actor_id.agent_id if actor_id is not None else 0)
        name = self._network_names.get(agent_key) or self._network_names.get(step)
        if name is None:
            raise ConfigError(f"actor_id: no network for {actor_id}")
        return self.networks[name]

    # -- tensor API (training) ------------------------------------------------------------------------------

    def compute_logits_dict(self, obs_tensors: Mapping[str, torch.Tensor],
                            actor_id: ActorID | None = None) -> dict[str, torch.Tensor]:
        """Run the actor's net on (batched) observation tensors; returns logits per action key."""
        return self.network(actor_id)(obs_tensors)

    def logits_dict_to_distribution(self, logits_dict: Mapping[str, Any], actor_id: ActorID | None = None,
                                    temperature: float = 1.0) -> DictProbabilityDistribution:
        """The action distribution for logits produced by the actor's net."""
        mapper = self.distribution_mappers[self._step_key(actor_id)]
        return mapper.logits_dict_to_distribution(logits_dict, temperature=temperature)

    def distribution(self, obs_tensors: Mapping[str, torch.Tensor], actor_id: ActorID | None = None,
                     temperature: float = 1.0) -> DictProbabilityDistribution:
        """Forward pass plus distribution: what a policy-gradient loss needs."""
        logits = self.compute_logits_dict(obs_tensors, actor_id)
        return self.logits_dict_to_distribution(logits, actor_id, temperature)

    def to(self, device: str | torch.device) -> "TorchPolicy":
        """Move the nets to ``device`` (sampling follows)."""
        super().to(device)
        if self._generator is not None:
            self.seed(self._seed)
        return self

    def __getstate__(self) -> dict[str, Any]:
        # torch generators do not pickle; the copy re-creates one from the stored seed.
        return {**self.__dict__, "_generator": None}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        if self._seed is not None:
            self.seed(self._seed)

    # -- acting ---------------------------------------------------------------------------------------------

    def seed(self, seed: int | None) -> None:
        """Make sampling reproducible (``None``: use torch's global random state)."""
        self._seed = seed
        if seed is None:
            self._generator = None
        else:
            self._generator = torch.Generator(device=self.device)
            self._generator.manual_seed(int(seed))

    def _observation_keys(self, step: StepKey, observation: Mapping[str, Any]) -> list[str]:
        if self.observation_spaces_dict is None or step not in self.observation_spaces_dict:
            return list(observation)
        return list(self.observation_spaces_dict[step].spaces)

    def _batch_tensors(self, step: StepKey,
                       observations: Sequence[Mapping[str, Any]]) -> dict[str, torch.Tensor]:
        """Stack observations key by key into float32 tensors with a leading batch dimension."""
        tensors = {}
        space = self.observation_spaces_dict.get(step) if self.observation_spaces_dict else None
        for key in self._observation_keys(step, observations[0]):
            try:
                # One np.array call over the list is several times faster than per-item asarray + stack.
                array = np.array([observation[key] for observation in observations], dtype=np.float32)
            except KeyError as err:
                raise SpaceMismatchError(f"observation.{key}", "a value (key is missing)", "nothing") from err
            except (TypeError, ValueError) as err:
                raise SpaceMismatchError(f"observation.{key}", "numbers of one shape in every observation",
                                         str(err)) from err
            if space is not None:
                expected = space.spaces[key].shape
                if expected is not None and array.shape[1:] != expected:
                    raise SpaceMismatchError(f"observation.{key}", f"shape {expected}",
                                             f"shape {array.shape[1:]}")
            tensors[key] = torch.from_numpy(array).to(self.device)
        return tensors

    def actions_to_numpy(self, actions: Mapping[str, Any], actor_id: ActorID | None = None) -> dict[str, Any]:
        """Batched action tensors (from ``distribution(...).sample()``) as numpy arrays that fit the action
        space: Box actions clipped to their bounds, every key cast to its space's dtype."""
        return self._converters[self._step_key(actor_id)](actions)

    def _act(self, observations: Sequence[Mapping[str, Any]], actor_id: ActorID | None, deterministic: bool,
             temperature: float, log_probs_out: list[float | None] | None = None) -> Any:
        step = self._step_key(actor_id)
        obs_tensors = self._batch_tensors(step, observations)
        with torch.inference_mode():
            distribution = self.distribution(obs_tensors, actor_id, temperature)
            if deterministic:
                actions = distribution.deterministic_sample()
            else:
                actions = distribution.sample(self._generator)
            if log_probs_out is not None:
                # Of the sample itself (before a Box action is clipped to its bounds), summed over the keys.
                log_probs_out[:] = distribution.log_prob(actions).reshape(len(observations)).tolist()
        return self.actions_to_numpy(actions, actor_id)

    def compute_action(self, observation: dict[str, Any], actor_id: ActorID | None = None,
                       deterministic: bool = False, *, maze_state: Any = None, env: Any = None,
                       temperature: float = 1.0) -> dict[str, Any]:
        """The action for one observation; ``maze_state`` and ``env`` are accepted and ignored."""
        return _split_batch(self._act([observation], actor_id, deterministic, temperature), 1)[0]

    def compute_actions(self, observations: Sequence[dict[str, Any]], actor_id: ActorID | None = None,
                        deterministic: bool = False, *, temperature: float = 1.0,
                        log_probs_out: list[float | None] | None = None) -> list[dict[str, Any]]:
        """Actions for many observations of the same actor, in one forward pass.

        ``log_probs_out``, when given, receives the log-probability of each action under the policy's
        distribution (one float per observation), computed in the same pass; without it nothing extra runs.
        """
        if not observations:
            if log_probs_out is not None:
                log_probs_out.clear()
            return []
        return _split_batch(self._act(observations, actor_id, deterministic, temperature, log_probs_out),
                            len(observations))
