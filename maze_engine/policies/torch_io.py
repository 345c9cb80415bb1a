"""Run directories of torch policies: ``save_torch_policy`` writes one, ``load_torch_policy`` reads it.

A run directory holds ``state_dict.pt`` (weights only), ``spaces.json`` and ``model.yaml``; see
docs/models.md. ``load_torch_policy`` rebuilds the nets from those files and never unpickles objects.
Kept apart from TorchPolicy because rebuilding needs the composers, which themselves build TorchPolicies.
"""

import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from gymnasium import spaces

from maze_engine.core.errors import ConfigError, SpaceMismatchError
from maze_engine.core.factory import _plain_config
from maze_engine.core.space_codec import describe_space, read_spaces_json, write_spaces_json
from maze_engine.perception.composers.model import build_model_composers_from_spaces
from maze_engine.policies.torch_policy import StepKey, TorchPolicy

logger = logging.getLogger(__name__)

STATE_DICT_FILE = "state_dict.pt"
SPACES_FILE = "spaces.json"
MODEL_FILE = "model.yaml"


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
