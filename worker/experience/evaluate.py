"""``maze-worker experience evaluate``: a policy's expected return estimated from logged episodes, before it
serves (docs/evaluation.md).

The policy is a training run directory or a published version (``published:NAME@VERSION``, or
``published:NAME`` for the latest, under ``--artifact-root``); the episodes come from a Minari dataset (a
path or a local id) or straight from the experience stream of a prefix (``stream:PREFIX``). The estimates
are ``maze_engine.evaluation``'s; this module only finds the inputs and prints the outcome.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from worker.errors import EXIT_CONFIG_ERROR, EXIT_FAILURE, EXIT_OK, ConfigProblem, fail, one_line

PUBLISHED = "published:"
STREAM = "stream:"


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
    parser.add_argument("--gamma", type=float, default=1.0, help="discount (default 1.0: the episode return)")
    parser.add_argument("--bootstrap", type=int, default=500, help="bootstrap resamples (default 500)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the resamples and of the Q-function fit")
    parser.add_argument("--level", type=float, default=0.95, help="interval coverage (default 0.95)")
    parser.add_argument("--methods", default="wis,dr", help="comma-separated: wis, dr (default both)")
    parser.add_argument("--epsilon", type=float, default=None,
                        help="floor the policy's probability of logged actions (biased; default: refuse "
                             "actions it never takes)")
    parser.add_argument("--fqe-steps", type=int, default=None, help="gradient steps of the Q-function fit")
    parser.add_argument("--artifact-root", default=None,
                        help="where published policies live (default $MAZE_ARTIFACT_ROOT, else artifacts)")
    parser.add_argument("--url", default=None,
                        help="broker URL for stream: (default broker.url, $MAZE_AMQP_URL)")
    parser.add_argument("--from", dest="start", default="first", help="where a stream: read starts")
    parser.add_argument("--idle-s", type=float, default=1.0, help="a stream: read ends after this quiet time")
    parser.add_argument("--stream-policy", default=None, help="only stream: episodes of this policy name")
    parser.add_argument("--json", action="store_true", help="print one JSON line instead of the table")
    return parser


def evaluate_command(argv: Sequence[str]) -> int:
    """Exit 0 with the estimates; 2 for a usage mistake or data the estimates refuse; 1 when the broker
    fails."""
    from maze_engine.core.errors import MazeError
    from worker.broker.link import TransportError
    from worker.broker.stream import StreamNotFound

    parser = evaluate_parser()
    options = parser.parse_args(list(argv))
    try:
        import torch

        torch.set_num_threads(1)  # small nets: a thread pool only spins (docs/training.md, Threads)
        policy, policy_label = load_policy(options.policy, options.artifact_root)
        data = load_data(options)
        result = _evaluate(data, policy, options)
    except (MazeError, ConfigProblem, StreamNotFound, ValueError) as err:
        return fail(one_line(err), EXIT_CONFIG_ERROR)
    except TransportError as err:
        return fail(str(err), EXIT_FAILURE)
    report = {"policy": policy_label, "dataset": options.dataset, **result.as_dict()}
    print(json.dumps(report) if options.json else table(report), file=sys.stdout)
    return EXIT_OK


def _evaluate(data: Any, policy: Any, options: argparse.Namespace) -> Any:
    from maze_engine.evaluation import FQEConfig, evaluate_off_policy

    methods = tuple(method.strip() for method in options.methods.split(",") if method.strip())
    steps = {} if options.fqe_steps is None else {"steps": options.fqe_steps}
    return evaluate_off_policy(data, policy, gamma=options.gamma, methods=methods,
                               bootstrap=options.bootstrap, seed=options.seed, level=options.level,
                               epsilon=options.epsilon, fqe=FQEConfig(seed=options.seed, **steps))


def load_policy(source: str, artifact_root: str | None) -> tuple[Any, str]:
    """The TorchPolicy of a run directory or of a published version, and how to name it."""
    from maze_engine.policies.torch_io import load_torch_policy
    from worker.policy_store.store import get_policy, latest_policy, load_version, names_hint

    if not source.startswith(PUBLISHED):
        return load_torch_policy(source), str(Path(source).absolute())
    root = artifact_root or os.environ.get("MAZE_ARTIFACT_ROOT") or "artifacts"
    name, _, version_text = source[len(PUBLISHED):].partition("@")
    if version_text:
        if not version_text.isdigit():
            raise ConfigProblem(f"--policy: expected published:NAME@VERSION with an integer version, got "
                                f"{source!r}")
        published = get_policy(root, name, int(version_text))
    else:
        latest = latest_policy(root, name)
        if latest is None:
            raise ConfigProblem(f"--policy: no version of {name!r} is published under {root} "
                                f"({names_hint(root)})")
        published = latest
    return load_version(published), f"{PUBLISHED}{published.name}@{published.version}"


def load_data(options: argparse.Namespace) -> Any:
    """The logged episodes of ``--dataset``: a Minari dataset, or the experience stream of a prefix."""
    from maze_engine.evaluation import logged_episodes_from_minari

    if not options.dataset.startswith(STREAM):
        return logged_episodes_from_minari(options.dataset, "--dataset")
    from worker.experience.cli import compose
    from worker.experience.reader import read_episodes
    from worker.startup import settings_of

    prefix = options.dataset[len(STREAM):]
    if not prefix:
        raise ConfigProblem("--dataset: expected stream:PREFIX, the broker.prefix of the recording workers")
    overrides = [f"broker.prefix={prefix}", *([f"broker.url={options.url}"] if options.url else [])]
    broker = settings_of(compose(overrides)).broker
    episodes = list(read_episodes(broker, options.start, options.idle_s, options.stream_policy))
    if not episodes:
        raise ConfigProblem(f"--dataset: no complete recorded episode in {prefix}.experience from --from "
                            f"{options.start}" + (f" of policy {options.stream_policy!r}"
                                                  if options.stream_policy else ""))
    return from_recorded(episodes, f"the experience stream {prefix}.experience")


def from_recorded(episodes: Sequence[Any], name: str) -> Any:
    """Recorded episodes (``worker.experience.reader``) as LoggedEpisodes, with the export's propensity
    rules: the proposal's log-probability where the proposal was applied, NaN elsewhere."""
    from maze_engine.evaluation import LoggedEpisodes
    from maze_engine.evaluation.sources import episode_propensities
    from worker.experience.record import concatenate

    kept = [episode for episode in episodes if episode.columns is not None and episode.steps > 0]
    if not kept:
        raise ConfigProblem(f"--dataset: {name} holds no recorded steps")
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
