"""Reading one value of a settings section: type and range checked, a ConfigError naming the dotted key.

``worker/settings.py`` builds its dataclasses with these; each takes the section (a mapping), the full
dotted key (for the message) and the default, which lives in the dataclass.
"""

from collections.abc import Mapping
from typing import Any

from maze_engine.core.errors import ConfigError


def plain(config: Any) -> Any:
    try:
        from omegaconf import DictConfig, OmegaConf
    except ImportError:  # pragma: no cover - omegaconf ships with hydra, a hard dependency
        return config
    if isinstance(config, DictConfig):
        return OmegaConf.to_container(config, resolve=True)
    return config


def section(config: Mapping[str, Any], name: str, key: str | None = None) -> Mapping[str, Any]:
    value = config.get(name)
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ConfigError(f"{key or name}: expected a mapping of settings, "
                          f"got {type(value).__name__} {value!r}")
    return value


def name(key: str) -> str:
    """The last segment of a dotted key: its name in its section."""
    return key.rsplit(".", 1)[-1]


def integer(section: Mapping[str, Any], key: str, default: int, minimum: int | None = None,
             maximum: int | None = None) -> int:
    value = section.get(name(key), default)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{key}: expected an integer, got {type(value).__name__} {value!r}")
    if minimum is not None and value < minimum or maximum is not None and value > maximum:
        bounds = f">= {minimum}" if maximum is None else f"in [{minimum}, {maximum}]"
        raise ConfigError(f"{key}: expected an integer {bounds}, got {value}")
    return value


def number(section: Mapping[str, Any], key: str, default: float, positive: bool = False) -> float:
    value = section.get(name(key), default)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"{key}: expected a number of seconds, got {type(value).__name__} {value!r}")
    if value < 0 or positive and value == 0:
        raise ConfigError(f"{key}: expected a number {'> 0' if positive else '>= 0'}, got {value}")
    return float(value)


def choice(section: Mapping[str, Any], key: str, default: str, choices: tuple[str, ...]) -> str:
    value = section.get(name(key), default)
    if value not in choices:
        raise ConfigError(f"{key}: expected one of {', '.join(choices)}, "
                          f"got {type(value).__name__} {value!r}")
    return str(value)


def boolean(section: Mapping[str, Any], key: str, default: bool) -> bool:
    value = section.get(name(key), default)
    if not isinstance(value, bool):
        raise ConfigError(f"{key}: expected true or false, got {type(value).__name__} {value!r}")
    return value


def string(section: Mapping[str, Any], key: str, default: str) -> str:
    value = section.get(name(key), default)
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{key}: expected a non-empty string, got {type(value).__name__} {value!r}")
    return value


def optional_string(section: Mapping[str, Any], key: str) -> str | None:
    value = section.get(name(key))
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise ConfigError(f"{key}: expected a file path or null, got {type(value).__name__} {value!r}")
    return value
