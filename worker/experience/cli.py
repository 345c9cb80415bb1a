"""``maze-worker experience export``: the experience stream of a prefix as a Minari dataset.

Trailing overrides (``env=...``, ``wrappers=...``) compose the env whose observation and action spaces the
dataset gets, as for the workers that recorded it.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from maze_engine.config import compose_config, register_schemas
from maze_engine.core.errors import MazeError
from maze_engine.deployment.stack import bottom_maze_env
from worker.errors import EXIT_CONFIG_ERROR, EXIT_FAILURE, EXIT_OK, ConfigProblem, fail, one_line
from worker.startup import resolved_config, settings_of

WORKER_CONFIG = "conf_worker"
RANDOM_POLICY = {"_target_": "maze_engine.RandomPolicy"}
"""The spaces of an export need no trained policy: the env and wrappers decide them."""


def compose(overrides: Sequence[str]) -> Any:
    """The composed ``conf_worker`` config; ConfigProblem for a bad override."""
    register_schemas()
    try:
        return compose_config(WORKER_CONFIG, list(overrides))
    except Exception as err:  # noqa: BLE001 - Hydra and omegaconf raise many types for bad overrides
        raise ConfigProblem(one_line(err)) from err


def export_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="maze-worker experience export",
        description="Read the experience stream <prefix>.experience and write a Minari dataset "
                    "(docs/experience.md). Trailing overrides (env=..., wrappers=...) give the spaces.")
    parser.add_argument("--prefix", required=True, help="broker.prefix of the recording workers")
    parser.add_argument("--dataset-id", required=True, help="Minari id, (namespace/)name-v<version>")
    parser.add_argument("--out", required=True, type=Path, help="datasets directory (MINARI_DATASETS_PATH)")
    parser.add_argument("--from", dest="start", default="first",
                        help="first (default), last, next, a stream offset or an ISO 8601 time")
    parser.add_argument("--episodes", type=int, default=None, help="stop after this many episodes")
    parser.add_argument("--policy", default=None, help="only episodes of this policy name")
    parser.add_argument("--idle-s", type=float, default=1.0,
                        help="stop once no record came for this long (the stream's end)")
    parser.add_argument("--url", default=None, help="broker URL (default: broker.url, $MAZE_AMQP_URL)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("overrides", nargs="*", help="config overrides for the env and wrappers")
    return parser


def experience_command(argv: Sequence[str]) -> int:
    """``maze-worker experience export ...``: exit 0 with a JSON summary, 2 for a usage mistake or data that
    cannot be exported, 1 when the broker fails."""
    args = list(argv)
    if not args or args[0] != "export":
        return fail("experience: expected the subcommand export or evaluate (maze-worker experience export "
                    "--help, maze-worker experience evaluate --help)",
                    EXIT_CONFIG_ERROR)
    parser = export_parser()
    options = parser.parse_intermixed_args(args[1:])
    if options.episodes is not None and options.episodes < 1:
        parser.error(f"--episodes: expected a positive integer, got {options.episodes}")
    from worker.broker.link import TransportError
    from worker.broker.stream import StreamNotFound
    from worker.experience.export import ExportError, export

    overrides = [*options.overrides, f"broker.prefix={options.prefix}"]
    if options.url:
        overrides.append(f"broker.url={options.url}")
    try:
        cfg = compose(overrides)
        settings = settings_of(cfg)
        spaces, env_spec = _spaces(resolved_config(cfg))
        summary = export(settings.broker, options.dataset_id, options.out, spaces, env_spec, options.start,
                         options.episodes, options.policy, options.idle_s, not options.no_progress)
    except (ConfigProblem, ExportError, StreamNotFound, ValueError) as err:
        return fail(str(err), EXIT_CONFIG_ERROR)
    except TransportError as err:
        return fail(str(err), EXIT_FAILURE)
    print(json.dumps({"dataset_id": options.dataset_id, "path": str(summary.path),
                      "episodes": summary.episodes, "steps": summary.steps,
                      "seconds": round(summary.seconds, 3),
                      "steps_per_s": round(summary.steps / summary.seconds, 1) if summary.seconds else None,
                      "records": summary.records, "unfinished_runs": summary.unfinished_runs,
                      "skipped": summary.skipped, "policies": summary.policies}), file=sys.stdout)
    return EXIT_OK


def _spaces(resolved: dict[str, Any]) -> tuple[Any, Any]:
    """The served spaces of the env and wrappers in ``resolved``, and the gymnasium spec when it has one."""
    from worker.episodes.spaces import ServedSpaces
    from worker.serving.factory import build_factory

    try:
        factory = build_factory(RANDOM_POLICY, resolved["env"], resolved.get("wrappers"))
    except (MazeError, ValueError, TypeError, ImportError, OSError) as err:
        raise ConfigProblem(f"cannot build the env from env and wrappers: {one_line(err)}") from err
    spaces = ServedSpaces.of(factory)
    assert spaces is not None
    gym_env = getattr(bottom_maze_env(factory.template_env), "gym_env", None)
    return spaces, getattr(gym_env, "spec", None)
