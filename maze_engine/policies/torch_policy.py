"""TorchPolicy: torch networks plus distribution mappers acting as a StructuredPolicy, and its run directory.

Acting (``compute_action``/``compute_actions``) converts numpy observations to tensors, runs one forward pass
without autograd and returns numpy actions that fit the action space. Trainers use the tensor API
(``compute_logits_dict``, ``distribution``) and the usual module methods (``parameters``, ``state_dict``...).

A run directory holds ``state_dict.pt`` (weights only), ``spaces.json`` and ``model.yaml``; see
docs/models.md. ``load_torch_policy`` rebuilds the nets from those files and never unpickles objects.
"""

import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from gymnasium import spaces
from torch import nn

from maze_engine.core.actor_id import ActorID
from maze_engine.core.errors import ConfigError, SpaceMismatchError
from maze_engine.core.factory import _plain_config
from maze_engine.core.space_codec import describe_space, read_spaces_json, write_spaces_json
from maze_engine.perception.distributions.dict_distribution import DictProbabilityDistribution
from maze_engine.perception.distributions.mapper import DistributionMapper
from maze_engine.policies.policy import StructuredPolicy

logger = logging.getLogger(__name__)

StepKey = int | str
NetworkKey = StepKey | tuple[StepKey, int]
"""A step key, or ``(step_key, agent_id)`` for steps whose agents have separate nets."""

STATE_DICT_FILE = "state_dict.pt"
SPACES_FILE = "spaces.json"
MODEL_FILE = "model.yaml"


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


class TorchPolicy(StructuredPolicy):
    """A StructuredPolicy over torch nets: one net (and distribution mapper) per step key.

    ``networks`` maps step keys to nets that take a dict of observation tensors and return a dict of logits
    (one per action key). Steps whose agents have separate nets use ``(step_key, agent_id)`` keys instead.
    ``distribution_mapper`` is one mapper for every step or a mapping step key -> mapper.
    """

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

    def parameters(self) -> Any:
        """All trainable parameters of all nets."""
        return self.networks.parameters()

    def to(self, device: str | torch.device) -> "TorchPolicy":
        """Move the nets to ``device`` (sampling follows)."""
        self.device = torch.device(device)
        self.networks.to(self.device)
        if self._generator is not None:
            self.seed(self._seed)
        return self

    def train(self, mode: bool = True) -> "TorchPolicy":
        """Put the nets in training mode."""
        self.networks.train(mode)
        return self

    def eval(self) -> "TorchPolicy":
        """Put the nets in evaluation mode (dropout off, batch norm frozen)."""
        self.networks.eval()
        return self

    def state_dict(self) -> dict[str, Any]:
        """Weights of all nets, keyed ``<network name>.<parameter>``."""
        return self.networks.state_dict()

    def load_state_dict(self, state_dict: Mapping[str, Any], strict: bool = True) -> None:
        """Load weights saved by ``state_dict``."""
        self.networks.load_state_dict(state_dict, strict=strict)

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
             temperature: float) -> Any:
        step = self._step_key(actor_id)
        obs_tensors = self._batch_tensors(step, observations)
        with torch.inference_mode():
            distribution = self.distribution(obs_tensors, actor_id, temperature)
            if deterministic:
                actions = distribution.deterministic_sample()
            else:
                actions = distribution.sample(self._generator)
        return self.actions_to_numpy(actions, actor_id)

    def compute_action(self, observation: dict[str, Any], actor_id: ActorID | None = None,
                       deterministic: bool = False, *, maze_state: Any = None, env: Any = None,
                       temperature: float = 1.0) -> dict[str, Any]:
        """The action for one observation; ``maze_state`` and ``env`` are accepted and ignored."""
        return _split_batch(self._act([observation], actor_id, deterministic, temperature), 1)[0]

    def compute_actions(self, observations: Sequence[dict[str, Any]], actor_id: ActorID | None = None,
                        deterministic: bool = False, *, temperature: float = 1.0) -> list[dict[str, Any]]:
        """Actions for many observations of the same actor, in one forward pass."""
        if not observations:
            return []
        return _split_batch(self._act(observations, actor_id, deterministic, temperature), len(observations))


# -- run directory ------------------------------------------------------------------------------------------


def _yaml_ready(value: Any, field: str) -> Any:
    """Plain YAML values; classes become their dotted paths. Anything else cannot be written as config."""
    if isinstance(value, Mapping):
        return {key: _yaml_ready(item, f"{field}.{key}") for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_yaml_ready(item, f"{field}[{index}]") for index, item in enumerate(value)]
    if isinstance(value, type):
        return f"{value.__module__}.{value.__qualname__}"
    if value is None or isinstance(value, bool | int | float | str):
        return value
    raise TypeError(f"{field} holds a {type(value).__name__} object, which a config file cannot express")


def model_config_to_yaml(model_config: Any) -> str:
    """The model config as YAML text; raises TypeError when it holds Python objects (nets, composers)."""
    from omegaconf import DictConfig, OmegaConf

    if isinstance(model_config, DictConfig):
        model_config = OmegaConf.to_container(model_config, resolve=True)
    import yaml

    return yaml.safe_dump(_yaml_ready(model_config, "model"), sort_keys=False)


def _cpu_state(state_dict: Mapping[str, Any]) -> dict[str, Any]:
    return {key: value.detach().cpu() if isinstance(value, torch.Tensor) else value
            for key, value in state_dict.items()}


def save_torch_policy(run_dir: str | Path, policy: TorchPolicy, model_config: Any,
                      observation_spaces_dict: Mapping[StepKey, spaces.Space],
                      action_spaces_dict: Mapping[StepKey, spaces.Space], critic: Any = None,
                      agent_counts_dict: Mapping[StepKey, int] | None = None) -> None:
    """Write ``state_dict.pt``, ``spaces.json`` and (when the model came from config) ``model.yaml``.

    The state dict is written to a temporary file and renamed, so a reader never sees half a file even
    while training overwrites the best model.
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    state = {"policy": _cpu_state(policy.state_dict())}
    if critic is not None:
        state["critic"] = _cpu_state(critic.state_dict())
    temporary = run_dir / f".{STATE_DICT_FILE}.tmp"
    torch.save(state, temporary)
    os.replace(temporary, run_dir / STATE_DICT_FILE)
    write_spaces_json(run_dir / SPACES_FILE, observation_spaces_dict, action_spaces_dict, agent_counts_dict)
    if model_config is None:
        return
    try:
        text = model_config_to_yaml(model_config)
    except TypeError as err:
        logger.warning("%s not written: %s; load_torch_policy then needs model_config=...", MODEL_FILE, err)
        return
    (run_dir / MODEL_FILE).write_text(text, encoding="utf-8")


def load_state_dict_file(path: str | Path, device: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a ``state_dict.pt`` with ``weights_only=True``: tensors and plain containers, never objects."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: file not found; expected the {STATE_DICT_FILE} written by training")
    try:
        state = torch.load(path, map_location=device, weights_only=True)
    except Exception as err:  # torch raises UnpicklingError, RuntimeError or EOFError for bad files
        raise ConfigError(f"{path}: expected a weights-only state dict {{'policy': ..., 'critic': ...}}; "
                          f"the file cannot be loaded safely ({type(err).__name__}: {err})") from err
    if not isinstance(state, dict) or not isinstance(state.get("policy"), Mapping):
        got = sorted(state) if isinstance(state, dict) else type(state).__name__
        raise ConfigError(f"{path}: expected a dict with a 'policy' state dict, got {got}")
    return state


def _check_spaces(saved: Mapping[StepKey, spaces.Space], given: Mapping[StepKey, spaces.Space] | None,
                  field: str, path: Path) -> None:
    if given is None:
        return
    if [str(key) for key in saved] != [str(key) for key in given]:
        raise SpaceMismatchError(f"{path}: {field}", f"step keys {list(saved)}", f"step keys {list(given)}")
    for (step, saved_space), given_space in zip(saved.items(), given.values(), strict=True):
        if saved_space != given_space:
            raise SpaceMismatchError(f"{path}: {field}[{step!r}]",
                                     f"the trained space {describe_space(saved_space)}",
                                     f"the env's space {describe_space(given_space)}")


def _read_model_config(path: Path) -> Any:
    import yaml

    if not path.is_file():
        raise ConfigError(f"{path}: file not found; expected the model config written by training (policy "
                          "composer and distribution_mapper_config), or pass model_config=")
    try:
        config = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        raise ConfigError(f"{path}: expected a YAML model config, got unreadable content ({err})") from err
    if not isinstance(config, Mapping) or "policy" not in config:
        raise ConfigError(f"{path}: expected a mapping with a 'policy' entry")
    return config


def load_torch_policy(input_dir: str | Path, action_spaces_dict: Mapping[StepKey, spaces.Space] | None = None,
                      observation_spaces_dict: Mapping[StepKey, spaces.Space] | None = None,
                      device: str = "cpu", model_config: Any = None,
                      state_dict_file: str = STATE_DICT_FILE) -> TorchPolicy:
    """Rebuild a trained TorchPolicy from a run directory, in eval mode.

    Nets come from ``model.yaml`` (or ``model_config``) and ``spaces.json``; weights from ``state_dict_file``.
    Spaces passed by the caller (the env's) must equal the trained ones. Usable as a Hydra ``_target_``.
    """
    from maze_engine.perception.composers.model import build_model_composers_from_spaces

    directory = Path(input_dir)
    if not directory.is_dir():
        raise ConfigError(f"input_dir: {directory} is not a directory; expected a training run directory")
    spaces_path = directory / SPACES_FILE
    if spaces_path.is_file():
        saved_obs, saved_actions, agent_counts = read_spaces_json(spaces_path)
        _check_spaces(saved_actions, action_spaces_dict, "action_spaces_dict", spaces_path)
        _check_spaces(saved_obs, observation_spaces_dict, "observation_spaces_dict", spaces_path)
    elif action_spaces_dict is not None and observation_spaces_dict is not None:
        logger.warning("%s missing; building the policy for the env's spaces", spaces_path)
        saved_obs, saved_actions, agent_counts = dict(observation_spaces_dict), dict(action_spaces_dict), None
    else:
        raise ConfigError(f"{spaces_path}: file not found; expected the spaces written by training "
                          "(or pass action_spaces_dict and observation_spaces_dict)")
    if model_config is None:
        model_config = _read_model_config(directory / MODEL_FILE)
    model_config = _plain_config(model_config)
    if isinstance(model_config, Mapping):
        model_config = {key: value for key, value in model_config.items() if key != "critic"}
    policy_composer, _ = build_model_composers_from_spaces(model_config, saved_actions, saved_obs,
                                                           agent_counts, device=device)
    policy = policy_composer.policy
    state_path = directory / state_dict_file
    state = load_state_dict_file(state_path, device)
    try:
        policy.load_state_dict(state["policy"])
    except RuntimeError as err:
        raise ConfigError(f"{state_path}: the saved weights do not fit the nets built from the model config "
                          f"({err})") from err
    return policy.eval()
