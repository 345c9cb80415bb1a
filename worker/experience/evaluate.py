"""``maze-worker experience evaluate``: a policy's expected return estimated from logged episodes, before it
serves (docs/evaluation.md).

The policy is a training run directory or a published version (``published:NAME@VERSION``, or
``published:NAME`` for the latest, under ``--artifact-root``); the episodes come from a Minari dataset (a
path or a local id) or straight from the experience stream of a prefix (``stream:PREFIX``). The estimates
are ``maze_engine.evaluation``'s; this module only finds the inputs and reports the outcome.
``evaluate_policy`` is all of it from checked inputs to the report, for this command and for the evaluate
jobs of the job workers (``worker.jobs.child``) alike.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from worker.errors import EXIT_CONFIG_ERROR, EXIT_FAILURE, EXIT_OK, ConfigProblem, WorkerError, fail, one_line
from worker.settings import BrokerSettings

PUBLISHED = "published:"
STREAM = "stream:"
ESTIMATION_OPTIONS = ("gamma", "bootstrap", "seed", "level", "methods", "epsilon", "fqe_steps")
"""``evaluate_policy``'s keyword arguments that say how to estimate (``--gamma`` ... ``--fqe-steps``)."""
CLI_FIELDS = ("--policy", "--dataset")
"""What errors call the policy and the dataset."""


class EvaluationRefused(WorkerError):
    """The policy, the data or an option refuses an estimate (no propensities, an unknown version, a
    discount out of range...); the message is one line that names what."""


@dataclass(frozen=True)
class StreamSource:
    """How a ``stream:PREFIX`` dataset is read: the broker (its prefix becomes the dataset's), from where,
    until how long quiet, and only episodes of which policy name (None: all)."""

    broker: BrokerSettings
    start: str = "first"
    idle_s: float = 1.0
    policy: str | None = None


def evaluate_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="maze-worker experience evaluate",
        description="Estimate a policy's expected return from logged episodes (off-policy evaluation: "
                    "weighted importance sampling and doubly robust, bootstrap intervals; "
                    "docs/evaluation.md).")
    parser.add_argument("--policy", required=True,
                        help="a training run directory, or published:NAME@VERSION (published:NAME: the "
                             "latest)")
    parser.add_argument("--dataset", required=True,
                        help="a Minari dataset (path or local id), or stream:PREFIX (the experience stream)")
    add_estimation_arguments(parser)
    parser.add_argument("--artifact-root", default=None,
                        help="where published policies live (default $MAZE_ARTIFACT_ROOT, else artifacts)")
    parser.add_argument("--url", default=None,
                        help="broker URL for stream: (default broker.url, $MAZE_AMQP_URL)")
    parser.add_argument("--from", dest="start", default="first", help="where a stream: read starts")
    parser.add_argument("--idle-s", type=float, default=1.0, help="a stream: read ends after this quiet time")
    parser.add_argument("--stream-policy", default=None, help="only stream: episodes of this policy name")
    parser.add_argument("--json", action="store_true", help="print one JSON line instead of the table")
    return parser


def add_estimation_arguments(parser: argparse._ActionsContainer, omit_defaults: bool = False) -> None:
    """``--gamma`` ... ``--fqe-steps``, shared with ``maze-worker submit evaluate``. ``omit_defaults``: an
    option not given is left out of the parsed namespace (an evaluate job's defaults are these)."""

    def default(value: Any) -> Any:
        return argparse.SUPPRESS if omit_defaults else value

    parser.add_argument("--gamma", type=float, default=default(1.0),
                        help="discount (default 1.0: the episode return)")
    parser.add_argument("--bootstrap", type=int, default=default(500),
                        help="bootstrap resamples (default 500)")
    parser.add_argument("--seed", type=int, default=default(0),
                        help="seed of the resamples and of the Q-function fit (default 0)")
    parser.add_argument("--level", type=float, default=default(0.95), help="interval coverage (default 0.95)")
    parser.add_argument("--methods", default=default("wis,dr"),
                        help="comma-separated: wis, dr (default both)")
    parser.add_argument("--epsilon", type=float, default=default(None),
                        help="floor the policy's probability of logged actions (biased; default: refuse "
                             "actions it never takes)")
    parser.add_argument("--fqe-steps", type=int, default=default(None),
                        help="gradient steps of the Q-function fit (default 10000)")


def estimation_options(options: argparse.Namespace) -> dict[str, Any]:
    """The estimation options ``options`` holds, as ``evaluate_policy`` takes them (methods as a list)."""
    chosen = {name: getattr(options, name) for name in ESTIMATION_OPTIONS if hasattr(options, name)}
    if "methods" in chosen:
        chosen["methods"] = [method.strip() for method in chosen["methods"].split(",") if method.strip()]
    return chosen


def evaluate_command(argv: Sequence[str]) -> int:
    """Exit 0 with the estimates; 2 for a usage mistake or data the estimates refuse; 1 when the broker
    fails."""
    from maze_engine.core.errors import MazeError
    from worker.broker.link import TransportError

    options = evaluate_parser().parse_args(list(argv))
    try:
        import torch

        torch.set_num_threads(1)  # small nets: a thread pool only spins (docs/training.md, Threads)
        stream = _stream_source(options) if options.dataset.startswith(STREAM) else None
        report = evaluate_policy(options.policy, options.dataset, options.artifact_root, stream=stream,
                                 **estimation_options(options))
    except (EvaluationRefused, ConfigProblem, MazeError) as err:
        return fail(one_line(err), EXIT_CONFIG_ERROR)
    except TransportError as err:
        return fail(str(err), EXIT_FAILURE)
    print(json.dumps(report) if options.json else table(report), file=sys.stdout)
    return EXIT_OK


def _stream_source(options: argparse.Namespace) -> StreamSource:
    from worker.experience.cli import compose
    from worker.startup import settings_of

    broker = settings_of(compose([f"broker.url={options.url}"] if options.url else [])).broker
    return StreamSource(broker, options.start, options.idle_s, options.stream_policy)


def evaluate_policy(policy: str, dataset: str, artifact_root: str | Path | None, *,
                    gamma: float = 1.0, bootstrap: int = 500, seed: int = 0, level: float = 0.95,
                    methods: Sequence[str] = ("wis", "dr"), epsilon: float | None = None,
                    fqe_steps: int | None = None, stream: StreamSource | None = None,
                    fields: tuple[str, str] = CLI_FIELDS) -> dict[str, Any]:
    """The report of ``policy`` on ``dataset`` (what ``--json`` prints): ``{policy, dataset, estimates:
    {method: {value, low, high, ess}}, gamma, level, bootstrap, episodes, steps, behaviour_return,
    floored_steps}``.

    The inputs are the caller's to check (the CLI passes what it was given, a job what its worker vetted);
    ``stream`` is needed for a ``stream:`` dataset, ``fields`` names the policy and the dataset in errors.
    Raises EvaluationRefused when the policy, the data or an option refuses an estimate, TransportError
    when the broker fails.
    """
    from maze_engine.core.errors import MazeError
    from maze_engine.evaluation import FQEConfig, evaluate_off_policy
    from worker.broker.stream import StreamNotFound

    try:
        candidate, label = load_policy(policy, artifact_root, fields[0])
        data = load_data(dataset, stream, fields[1])
        fqe = FQEConfig(seed=seed) if fqe_steps is None else FQEConfig(seed=seed, steps=fqe_steps)
        result = evaluate_off_policy(data, candidate, gamma=gamma, methods=tuple(methods),
                                     bootstrap=bootstrap, seed=seed, level=level, epsilon=epsilon, fqe=fqe)
    except (MazeError, ConfigProblem, StreamNotFound, ValueError) as err:
        raise EvaluationRefused(one_line(err)) from None  # the text has the cause already
    return {"policy": label, "dataset": dataset, **result.as_dict()}


def load_policy(source: str, artifact_root: str | Path | None,
                field: str = CLI_FIELDS[0]) -> tuple[Any, str]:
    """The TorchPolicy of a run directory or of a published version, and how to name it."""
    from maze_engine.policies.torch_io import load_torch_policy
    from worker.policy_store.store import get_policy, latest_policy, load_version, names_hint

    if not source.startswith(PUBLISHED):
        return load_torch_policy(source), str(Path(source).absolute())
    root = artifact_root or os.environ.get("MAZE_ARTIFACT_ROOT") or "artifacts"
    name, _, version_text = source[len(PUBLISHED):].partition("@")
    if version_text:
        if not version_text.isdigit():
            raise ConfigProblem(f"{field}: expected published:NAME@VERSION with an integer version, got "
                                f"{source!r}")
        published = get_policy(root, name, int(version_text))
    else:
        latest = latest_policy(root, name)
        if latest is None:
            raise ConfigProblem(f"{field}: no version of {name!r} is published under {root} "
                                f"({names_hint(root)})")
        published = latest
    return load_version(published), f"{PUBLISHED}{published.name}@{published.version}"


def load_data(dataset: str, stream: StreamSource | None, field: str = CLI_FIELDS[1]) -> Any:
    """The logged episodes of ``dataset``: a Minari dataset, or the experience stream of a prefix (read as
    ``stream`` says)."""
    from maze_engine.evaluation import logged_episodes_from_minari

    if not dataset.startswith(STREAM):
        return logged_episodes_from_minari(dataset, field)
    from worker.experience.reader import read_episodes

    prefix = dataset[len(STREAM):]
    if not prefix:
        raise ConfigProblem(f"{field}: expected stream:PREFIX, the broker.prefix of the recording workers")
    assert stream is not None, "a stream: dataset is read with a StreamSource"
    broker = replace(stream.broker, prefix=prefix)
    episodes = list(read_episodes(broker, stream.start, stream.idle_s, stream.policy))
    if not episodes:
        raise ConfigProblem(f"{field}: no complete recorded episode in {prefix}.experience from "
                            f"{stream.start}" + (f" of policy {stream.policy!r}" if stream.policy else ""))
    return from_recorded(episodes, f"the experience stream {prefix}.experience", field)


def from_recorded(episodes: Sequence[Any], name: str, field: str = CLI_FIELDS[1]) -> Any:
    """Recorded episodes (``worker.experience.reader``) as LoggedEpisodes, with the export's propensity
    rules: the proposal's log-probability where the proposal was applied, NaN elsewhere."""
    from maze_engine.evaluation import LoggedEpisodes
    from maze_engine.evaluation.sources import episode_propensities
    from worker.experience.record import concatenate

    kept = [episode for episode in episodes if episode.columns is not None and episode.steps > 0]
    if not kept:
        raise ConfigProblem(f"{field}: {name} holds no recorded steps")
    columns = [episode.columns for episode in kept]
    propensities = [episode_propensities({"log_prob": column["log_prob"],
                                          "proposed_action": column["action"]},
                                         column["applied_action"], episode.steps, episode.mode)
                    for episode, column in zip(kept, columns, strict=True)]
    return LoggedEpisodes(observations=concatenate([column["observation"] for column in columns]),
                          actions=concatenate([column["applied_action"] for column in columns]),
                          behaviour_log_probs=np.concatenate(propensities),
                          rewards=np.concatenate([column["reward"] for column in columns]),
                          lengths=np.asarray([episode.steps for episode in kept]), name=name)


def table(report: dict[str, Any]) -> str:
    """The estimates for people: one line each, with the interval and the effective sample size."""
    level = f"{100 * report['level']:g}%"
    lines = [f"off-policy evaluation of {report['policy']}",
             f"  on {report['dataset']}: {report['episodes']:,} episodes, {report['steps']:,} steps, "
             f"gamma {report['gamma']:g}, {report['bootstrap']} bootstrap resamples",
             f"  {'behaviour':<10} {report['behaviour_return']:>10.3f}   (the logged episodes' mean "
             "return)"]
    for name, estimate in report["estimates"].items():
        lines.append(f"  {name:<10} {estimate['value']:>10.3f}   {level} interval [{estimate['low']:.3f}, "
                     f"{estimate['high']:.3f}]   ESS {estimate['ess']:,.1f} of {report['episodes']:,}")
    if report["floored_steps"]:
        lines.append(f"  epsilon floored the policy's probability at {report['floored_steps']:,} steps")
    return "\n".join(lines)
