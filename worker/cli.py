"""``maze-worker``: the command line of the RabbitMQ agent worker, a Hydra app over ``conf/conf_worker.yaml``.

``maze-worker [overrides]`` composes the config, checks it and serves until SIGTERM or Ctrl-C (exit 0). A bad
override or value prints one ``maze-worker: error: ...`` line and exits 2; a broker that cannot serve (missing
plugin, refused credentials) exits 1. Hydra's own flags (``--help``, ``--cfg job``, ``-cn``...) go to Hydra.
Subcommands (``maze-worker <name> ...``) are dispatched before Hydra sees the arguments: register them in
``SUBCOMMANDS``.
"""

import logging
import sys
from collections.abc import Callable, Sequence
from typing import Any

import hydra
from omegaconf import DictConfig, OmegaConf

from maze_engine.config import CONFIG_PATH, HYDRA_VERSION_BASE, compose_config, register_schemas
from maze_engine.core.errors import ConfigError, MazeError
from worker.errors import one_line

WORKER_CONFIG = "conf_worker"
EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_CONFIG_ERROR = 2

def _submit(args: list[str]) -> int:
    from worker.jobs.submit import submit_command

    return submit_command(args)


def _jobs(args: list[str]) -> int:
    from worker.jobs.submit import jobs_command

    return jobs_command(args)


SUBCOMMANDS: dict[str, Callable[[list[str]], int]] = {"submit": _submit, "jobs": _jobs}
"""``maze-worker <name> args...`` -> ``SUBCOMMANDS[name](args)``, whose return value is the exit code."""

logger = logging.getLogger("worker.cli")


class ConfigProblem(Exception):
    """A config mistake, reported as one line with exit code 2."""


def _resolved(cfg: DictConfig) -> dict[str, Any]:
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
        return WorkerSettings.from_config(_resolved(cfg))
    except ConfigError as err:
        raise ConfigProblem(str(err)) from err


def prepare(cfg: DictConfig) -> tuple[Any, Any]:
    """Settings and DeploymentFactory from a composed config; raises ConfigProblem naming the key."""
    from worker.policy_store.reload import published_policy_name, published_source
    from worker.serving.factory import build_factory

    resolved = _resolved(cfg)
    settings = settings_of(cfg)
    for key in ("env", "policy"):
        if resolved.get(key) is None:
            raise ConfigProblem(f"{key}: expected a config (pick one: {key}=...), got nothing")
    try:
        factory: Any
        if published_policy_name(resolved["policy"]) is not None:  # served by version, reloaded when newer
            factory = published_source(resolved["policy"], resolved["env"], resolved.get("wrappers"),
                                       build_factory)
        else:
            factory = build_factory(resolved["policy"], resolved["env"], resolved.get("wrappers"))
    except (MazeError, ValueError, TypeError, ImportError, OSError) as err:
        raise ConfigProblem(f"cannot build the agent from env, wrappers and policy: {one_line(err)}") from err
    limit_torch_threads(settings.torch_threads)
    return settings, factory


def limit_torch_threads(threads: int) -> None:
    """Cap torch's intra-op threads when a torch policy is loaded.

    The worker is single-threaded and its batches are small: a thread pool mostly spins, and on a busy
    machine it slows each forward pass down many times over.
    """
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(threads)


def configure_logging(level_name: Any) -> None:
    level = logging.getLevelName(str(level_name).upper())
    if not isinstance(level, int):
        raise ConfigProblem(f"log_level: expected DEBUG, INFO, WARNING or ERROR, got {level_name!r}")
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", force=True)
    # pika reports every lost connection as an error with a traceback; the service logs one clear line.
    logging.getLogger("pika").setLevel(logging.DEBUG if level <= logging.DEBUG else logging.CRITICAL)


def serve(cfg: DictConfig) -> int:
    """Run the worker for a composed config until it is stopped; returns the exit code."""
    from worker.broker.agent_transport import TransportError
    from worker.serving.heap import freeze_startup_heap
    from worker.serving.service import WorkerService

    if cfg.get("role", "agent") == "jobs":
        from worker.jobs.app import serve_jobs

        return serve_jobs(cfg)
    try:
        configure_logging(cfg.get("log_level", "INFO"))
        settings, factory = prepare(cfg)
    except ConfigProblem as err:
        return _fail(str(err), EXIT_CONFIG_ERROR)
    service = WorkerService(settings, factory)
    service.install_signal_handlers()
    frozen = freeze_startup_heap()
    logger.debug("%d objects of the start-up heap exempted from garbage collection", frozen)
    jobs = None
    if settings.role == "all":  # the job service on its own thread and connection, metrics in one registry
        from worker.jobs.app import JobThread

        jobs = JobThread(settings, service.metrics.registry).start()
    try:
        service.run()
    except TransportError as err:
        return _fail(str(err), EXIT_FAILURE)
    except OSError as err:  # e.g. the metrics port is taken
        return _fail(one_line(err), EXIT_FAILURE)
    finally:
        if jobs is not None:
            jobs.stop()
    logger.info("maze-worker stopped")
    return EXIT_OK


def _fail(message: str, code: int) -> int:
    print(f"maze-worker: error: {message}", file=sys.stderr, flush=True)
    return code


@hydra.main(config_path=CONFIG_PATH, config_name=WORKER_CONFIG, version_base=HYDRA_VERSION_BASE)
def _hydra_app(cfg: DictConfig) -> None:
    # SystemExit passes Hydra's handler (which catches Exception only), so the code reaches the shell.
    sys.exit(serve(cfg))


def main(argv: Sequence[str] | None = None) -> None:
    """Console entry point: subcommands first, Hydra's flags to Hydra, plain overrides composed here."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] in SUBCOMMANDS:
        sys.exit(SUBCOMMANDS[args[0]](args[1:]))
    register_schemas()
    if any(arg.startswith("-") for arg in args):
        sys.argv = [sys.argv[0], *args]
        _hydra_app()
        return
    # Composing here (not in hydra.main) lets every config mistake end as one line with exit code 2.
    try:
        cfg = compose_config(WORKER_CONFIG, args)
    except Exception as err:  # noqa: BLE001 - Hydra and omegaconf raise many types for bad overrides
        sys.exit(_fail(one_line(err), EXIT_CONFIG_ERROR))
    sys.exit(serve(cfg))


if __name__ == "__main__":
    main()
