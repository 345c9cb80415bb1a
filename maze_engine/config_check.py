"""Why a config does not compose, in one line with a "did you mean": what ``maze-run`` prints instead of
Hydra's multi-line report (and its ``+key`` hint, which adds a misspelt key rather than fixing it).

``explain_config_error("conf_rollout", ["runner.n_episode=5"])`` returns
``runner.n_episode: no such key in runner; did you mean runner.n_episodes=5?``. Unknown keys get the nearest
key of their node, unknown group options the nearest option, an unknown primary config (``-cn``) the nearest
config; a value of the wrong type names the key and the expected type.
"""

import difflib
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import Any

from hydra.errors import (
    ConfigCompositionException,
    HydraException,
    MissingConfigException,
    OverrideParseException,
)
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigAttributeError, ConfigKeyError, OmegaConfBaseException

from maze_engine.config import CONFIG_MODULE, compose_config

MAX_LISTED = 12
"""Candidates listed when none is close enough to suggest."""


def explain_config_error(config_name: str, overrides: Sequence[str],
                         config_dir: str | None = None) -> str | None:
    """One line on why ``config_name`` with ``overrides`` does not compose; None when it composes or the
    reason is none of those explained here (Hydra's own report is the better one then).

    With a ``config_dir`` (``maze-run --config-dir``) only an unknown config name is explained.
    """
    if config_dir:
        configs = primary_configs(config_dir)
        return None if config_name in configs else _unknown_config(config_name, configs)
    try:
        compose_config(config_name, overrides, with_hydra=True)
    except MissingConfigException as err:
        return _missing_config(err, config_name)
    except OverrideParseException as err:
        return " ".join(line.strip() for line in str(err).splitlines()[:2])
    except ConfigCompositionException as err:
        return _composition_error(err, config_name, overrides)
    except (HydraException, OmegaConfBaseException):
        return None
    return None


def suggest(name: str, candidates: Sequence[str]) -> str | None:
    """The candidate closest to ``name``, if any is close enough to be a misspelling of it."""
    matches = difflib.get_close_matches(name, list(candidates), n=1, cutoff=0.6)
    return matches[0] if matches else None


def primary_configs(config_dir: str | None = None) -> list[str]:
    """Names of the primary configs ``-cn`` can select (the YAML files at the top of the tree)."""
    names = {item.name.removesuffix(".yaml") for item in resources.files(CONFIG_MODULE).iterdir()
             if item.name.endswith(".yaml")}
    if config_dir:
        names |= {path.stem for path in Path(config_dir).glob("*.yaml")}
    return sorted(names)


def _missing_config(err: MissingConfigException, config_name: str) -> str | None:
    missing = err.missing_cfg_file or ""
    if err.options is not None and "/" in missing:
        group, option = missing.rsplit("/", 1)
        options = list(err.options)
        best = suggest(option, options)
        head = f"{group}={option}: no such option of {group}"
        if best is not None:
            return f"{head}; did you mean {group}={best}? (options: {', '.join(options)})"
        return f"{head}; expected one of: {', '.join(options)}"
    if missing == config_name:
        return _unknown_config(config_name, primary_configs())
    return None


def _unknown_config(config_name: str, configs: list[str]) -> str:
    best = suggest(config_name, configs)
    head = f"-cn {config_name}: no such config"
    if best is not None:
        return f"{head}; did you mean -cn {best}? (configs: {', '.join(configs)})"
    return f"{head}; expected one of: {', '.join(configs)} (or --config-dir DIR with your own)"


def _composition_error(err: ConfigCompositionException, config_name: str, overrides: Sequence[str]) -> str:
    cause = err.__cause__
    full_key = getattr(cause, "full_key", None)
    if not isinstance(cause, OmegaConfBaseException) or not full_key:
        return str(err).splitlines()[0]
    key = _dotted(str(full_key))
    if not isinstance(cause, ConfigAttributeError | ConfigKeyError):
        reason = str(getattr(cause, "msg", cause)).splitlines()[0]
        return f"{key}: {reason}"
    parent, _, leaf = key.rpartition(".")
    override = _override_for(key, overrides)
    rest = [item for item in overrides if item is not override]
    candidates = _keys_of(config_name, parent, rest)
    best = suggest(leaf, candidates)
    where = f" in {parent}" if parent else ""
    if best is not None:
        fixed = f"{parent}.{best}" if parent else best
        if override is not None:
            # The override may reach below the unknown key (seedin.env_base_seed=3): keep what follows it.
            name, _, value = override.lstrip("+~").partition("=")
            fixed = fixed + _dotted(name)[len(key):] + (f"={value}" if value else "")
        return f"{key}: no such key{where}; did you mean {fixed}?"
    listed = sorted(candidates)
    shown = ", ".join(listed[:MAX_LISTED]) + (", ..." if len(listed) > MAX_LISTED else "")
    return f"{key}: no such key{where}; expected one of: {shown}" if listed else f"{key}: no such key"


def _override_for(key: str, overrides: Sequence[str]) -> str | None:
    """The override that sets ``key`` or a key below it (``runner.n_episode=5`` for ``runner.n_episode``)."""
    for override in overrides:
        name = _dotted(override.split("=", 1)[0].lstrip("+~"))
        if name == key or name.startswith(f"{key}."):
            return override
    return None


def _keys_of(config_name: str, parent: str, overrides: Sequence[str]) -> list[str]:
    """Keys of node ``parent`` of the config composed without the failing override (groups too, at the
    top); the other overrides are kept where they compose, since group choices decide which keys exist."""
    config: Any = None
    for attempt in (list(overrides), [item for item in overrides if "." not in item.split("=", 1)[0]], []):
        try:
            config = compose_config(config_name, attempt, with_hydra=True)
            break
        except (HydraException, OmegaConfBaseException):
            continue
    if config is None:
        return []
    node = OmegaConf.select(config, parent) if parent else config
    if not isinstance(node, DictConfig):
        return []
    keys = [str(name) for name in node]
    if not parent:
        choices = OmegaConf.select(config, "hydra.runtime.choices") or {}
        keys += [str(group) for group in choices if not str(group).startswith("hydra/")]
        keys = [name for name in keys if name != "hydra"]
    return sorted(set(keys))


def _dotted(key: str) -> str:
    """``model.policy.networks[0].hidden_units`` as ``model.policy.networks.0.hidden_units``."""
    return key.replace("[", ".").replace("]", "")

