"""``maze-worker``: the command line of the RabbitMQ agent worker, a Hydra app over ``conf/conf_worker.yaml``.

``maze-worker [overrides]`` composes the config, checks it and serves until SIGTERM or Ctrl-C (exit 0). A bad
override or value prints one ``maze-worker: error: ...`` line and exits 2; a broker that cannot serve (missing
plugin, refused credentials) exits 1. Hydra's own flags (``--help``, ``--cfg job``, ``-cn``...) go to Hydra;
where they print the config, ``broker.url`` shows its password masked. Subcommands (``maze-worker <name>
...``) are dispatched before Hydra sees the arguments: register them in ``SUBCOMMANDS``.
"""

import json
import logging
import re
import sys
from collections.abc import Callable, Sequence
from typing import Any

import hydra
from omegaconf import DictConfig, OmegaConf

from maze_engine.config import CONFIG_PATH, HYDRA_VERSION_BASE, compose_config, register_schemas
from maze_engine.core.errors import MazeError
from worker.errors import EXIT_CONFIG_ERROR, EXIT_FAILURE, EXIT_OK, ConfigProblem, fail, one_line
from worker.startup import configure_logging, resolved_config, settings_of
from worker.wire.topology import mask_url

WORKER_CONFIG = "conf_worker"

def _submit(args: list[str]) -> int:
    from worker.jobs.submit import submit_command

    return submit_command(args)


def _jobs(args: list[str]) -> int:
    from worker.jobs.submit import jobs_command

    return jobs_command(args)


def _describe(args: list[str]) -> int:
    """``maze-worker describe [overrides]``: what such a worker answers a describe request, as JSON."""
    from worker.episodes.spaces import ServedSpaces
    from worker.experience.cli import compose
    from worker.serving.recording import description

    if any(arg in ("-h", "--help") for arg in args):
        print("usage: maze-worker describe [overrides ...]\n\nPrints the spaces (state, action, the policy's "
              "observation and action) of the agent the overrides compose, as a running worker answers a "
              "describe request (docs/protocol.md).")
        return EXIT_OK
    try:
        settings, factory = prepare(compose(args))
    except ConfigProblem as err:
        return fail(str(err), EXIT_CONFIG_ERROR)
    print(json.dumps(description(settings, ServedSpaces.of(factory), factory, None), indent=1))
    return EXIT_OK


def _experience(args: list[str]) -> int:
    if args[:1] == ["evaluate"]:
        from worker.experience.evaluate import evaluate_command

        return evaluate_command(args[1:])
    from worker.experience.cli import experience_command

    return experience_command(args)


def _policies(args: list[str]) -> int:
    from worker.policies_cli import policies_command

    return policies_command(args)


SUBCOMMANDS: dict[str, Callable[[list[str]], int]] = {"submit": _submit, "jobs": _jobs, "describe": _describe,
                                                      "experience": _experience, "policies": _policies}
"""``maze-worker <name> args...`` -> ``SUBCOMMANDS[name](args)``, whose return value is the exit code."""

logger = logging.getLogger("worker.cli")


def prepare(cfg: DictConfig) -> tuple[Any, Any]:
    """Settings and DeploymentFactory from a composed config; raises ConfigProblem naming the key."""
    from worker.policy_store.versioned import published_policy_name, published_source
    from worker.serving.factory import build_factory

    resolved = resolved_config(cfg)
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
        return fail(str(err), EXIT_CONFIG_ERROR)
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
        return fail(str(err), EXIT_FAILURE)
    except OSError as err:  # e.g. the metrics port is taken
        return fail(one_line(err), EXIT_FAILURE)
    finally:
        if jobs is not None:
            jobs.stop()
    logger.info("maze-worker stopped")
    return EXIT_OK


@hydra.main(config_path=CONFIG_PATH, config_name=WORKER_CONFIG, version_base=HYDRA_VERSION_BASE)
def _hydra_app(cfg: DictConfig) -> None:
    # SystemExit passes Hydra's handler (which catches Exception only), so the code reaches the shell.
    sys.exit(serve(cfg))


PRINTING_FLAGS = ("-c", "--cfg", "-h", "--help", "-i", "--info")
"""Hydra flags that print the composed config instead of running the app."""
CONFIG_CHOICE_FLAGS = ("-cn", "--config-name", "-cp", "--config-path", "-cd", "--config-dir")
_QUOTABLE = re.compile(r"[^'\\$\x00-\x1f\x7f]*")


def masked_url_args(args: list[str]) -> list[str]:
    """``args`` for Hydra, with ``broker.url`` set to its masked, resolved value when Hydra will print the
    config (``--cfg job``, ``--help``, ``--info``): the password (of an override or of ``MAZE_AMQP_URL``)
    never reaches the terminal or a log. Other invocations get ``args`` unchanged, as does another config
    (``-cn``), which may have no ``broker.url``."""
    flags = {arg.split("=", 1)[0] for arg in args if arg.startswith("-")}
    if not flags & set(PRINTING_FLAGS) or flags & set(CONFIG_CHOICE_FLAGS):
        return args
    overrides = [arg for arg in args if not arg.startswith("-") and "=" in arg]
    try:
        url = str(OmegaConf.select(compose_config(WORKER_CONFIG, overrides), "broker.url"))
    except Exception:  # noqa: BLE001 - Hydra reports a bad override itself, without printing the config
        return args
    masked = mask_url(url)
    if not _QUOTABLE.fullmatch(masked):
        masked = "<masked>"
    kept = [arg for arg in args if arg.lstrip("+").split("=", 1)[0] != "broker.url"]
    return [f"broker.url='{masked}'", *kept]  # first: a trailing flag such as --info takes an argument


def main(argv: Sequence[str] | None = None) -> None:
    """Console entry point: subcommands first, Hydra's flags to Hydra, plain overrides composed here."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] in SUBCOMMANDS:
        sys.exit(SUBCOMMANDS[args[0]](args[1:]))
    register_schemas()
    if any(arg.startswith("-") for arg in args):
        sys.argv = [sys.argv[0], *masked_url_args(args)]
        _hydra_app()
        return
    # Composing here (not in hydra.main) lets every config mistake end as one line with exit code 2.
    try:
        cfg = compose_config(WORKER_CONFIG, args)
    except Exception as err:  # noqa: BLE001 - Hydra and omegaconf raise many types for bad overrides
        sys.exit(fail(one_line(err), EXIT_CONFIG_ERROR))
    sys.exit(serve(cfg))


if __name__ == "__main__":
    main()
