"""From a composed ``conf_worker`` config to a running process: checked settings and logging.

Shared by the agent worker (``worker/cli.py``) and the job worker (``worker/jobs/app.py``); every mistake is
a ``ConfigProblem`` naming the key, which the command line prints as one line (exit code 2).
"""

import logging
from typing import Any

from omegaconf import DictConfig, OmegaConf

from maze_engine.core.errors import ConfigError
from worker.errors import ConfigProblem, one_line
from worker.wire.topology import mask_url


def resolved_config(cfg: DictConfig) -> dict[str, Any]:
    """``cfg`` with interpolations resolved, as plain dicts; raises ConfigProblem for a bad interpolation."""
    try:
        resolved = OmegaConf.to_container(cfg, resolve=True)
    except Exception as err:  # noqa: BLE001 - omegaconf raises several types for bad interpolations
        raise ConfigProblem(one_line(err)) from err
    assert isinstance(resolved, dict)
    return {str(key): value for key, value in resolved.items()}


def settings_of(cfg: DictConfig) -> Any:
    """The checked WorkerSettings of a composed config; raises ConfigProblem naming the key."""
    from worker.settings import WorkerSettings

    try:
        settings = WorkerSettings.from_config(resolved_config(cfg))
    except ConfigError as err:
        raise ConfigProblem(str(err)) from err
    check_url_options(settings.broker)
    return settings


def check_url_options(broker: Any) -> None:
    """Raise ConfigProblem naming ``broker.url`` unless the AMQP client accepts the URL's query options
    (``?heartbeat=abc`` would otherwise fail with a traceback when the worker connects)."""
    from dataclasses import replace

    from worker.broker.link import connection_parameters
    from worker.settings import TLSSettings

    try:  # without the TLS files: those are checked when the worker connects
        connection_parameters(replace(broker, tls=TLSSettings()), "maze-worker")
    except Exception as err:  # noqa: BLE001 - pika raises ValueError, SyntaxError... for bad query options
        reason = one_line(err)
        password = _password(broker.url)
        if password:
            reason = reason.replace(password, "****")
        raise ConfigProblem(f"broker.url: expected query options the AMQP client accepts (such as "
                            f"?heartbeat=30), got {mask_url(broker.url)!r} ({reason})") from None


def _password(url: str) -> str | None:
    from urllib.parse import urlsplit

    try:
        return urlsplit(url).password
    except ValueError:
        return None


def configure_logging(level_name: Any) -> None:
    level = logging.getLevelName(str(level_name).upper())
    if not isinstance(level, int):
        raise ConfigProblem(f"log_level: expected DEBUG, INFO, WARNING or ERROR, got {level_name!r}")
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", force=True)
    # pika reports every lost connection as an error with a traceback; the service logs one clear line.
    logging.getLogger("pika").setLevel(logging.DEBUG if level <= logging.DEBUG else logging.CRITICAL)
