"""``maze-worker policies``: release a published version as a canary, promote it, roll it back, run one in
shadow, look at them side by side.

    maze-worker policies release cartpole 3 --canary 0.1 [--auto --min-episodes 50 --confidence 0.95]
    maze-worker policies promote cartpole 3
    maze-worker policies rollback cartpole
    maze-worker policies shadow cartpole 4        (maze-worker policies shadow cartpole --stop)
    maze-worker policies status cartpole [--metrics http://worker-1:9100/metrics ...] [--json]

A change is written to the release state in the artifact root (``worker/policy_store/releases.py``), then
announced on ``<prefix>.policies`` (every agent worker serving the name reads the state again, at once) and
published as an event ``policy.<name>.released|promoted|rolled_back|shadowed|shadow_stopped`` on
``<prefix>.events``. A refused
change (an unknown name or version, a share outside (0, 1), a canary already running) prints one error line
naming it and exits 2; nothing served changes. ``status`` prints the release state with each version's
manifest, the last decision with its figures, and, with ``--metrics``, the live per-version figures summed
over the listed workers' ``/metrics`` (for a shadow: its agreement with the served actions and its estimated
return, ``worker/serving/candidate_figures.py``).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import urllib.request
from collections.abc import Sequence
from typing import Any

from worker.errors import EXIT_CONFIG_ERROR, EXIT_FAILURE, EXIT_OK

ARTIFACT_ROOT_ENV = "MAZE_ARTIFACT_ROOT"


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="maze-worker policies",
                                   description="Canary releases of published policies (docs/worker.md).")
    commands = root.add_subparsers(dest="command", required=True)
    release = commands.add_parser("release", help="serve VERSION to a share of new episodes (a canary)")
    release.add_argument("name")
    release.add_argument("version", type=int)
    release.add_argument("--canary", type=float, required=True, metavar="SHARE",
                         help="share of new episodes the canary gets, strictly between 0 and 1")
    release.add_argument("--auto", action="store_true",
                         help="let the workers promote or roll back the canary (one-sided Welch t-test)")
    release.add_argument("--min-episodes", type=int, default=50, metavar="N",
                         help="with --auto: finished episodes on each side before deciding (default 50)")
    release.add_argument("--confidence", type=float, default=0.95,
                         help="with --auto: confidence of the test (default 0.95)")
    promote = commands.add_parser("promote", help="make VERSION the stable version at once")
    promote.add_argument("name")
    promote.add_argument("version", type=int)
    rollback = commands.add_parser("rollback", help="stop the canary, or go back to the previous stable")
    rollback.add_argument("name")
    shadow = commands.add_parser("shadow", help="run VERSION in shadow beside what serves: its actions are "
                                 "computed, compared and scored, never returned")
    shadow.add_argument("name")
    shadow.add_argument("version", type=int, nargs="?", help="the published version to run in shadow")
    shadow.add_argument("--stop", action="store_true", help="stop the shadow that runs")
    status = commands.add_parser("status", help="the release state, the last decision, live figures")
    status.add_argument("name")
    status.add_argument("--metrics", action="append", default=[], metavar="URL",
                        help="a worker's /metrics URL, repeatable: per-version figures summed over them")
    status.add_argument("--json", action="store_true", help="print JSON instead of a table")
    for command in (release, promote, rollback, shadow, status):
        command.add_argument("--artifact-root", default=os.environ.get(ARTIFACT_ROOT_ENV, "artifacts"),
                             help="the artifact root (default: $MAZE_ARTIFACT_ROOT, else ./artifacts)")
    for command in (release, promote, rollback, shadow):
        command.add_argument("--url", default=None, help="broker URL (default: $MAZE_AMQP_URL, else local)")
        command.add_argument("--prefix", default="maze", help="topology prefix (default: maze)")
    return root


def policies_command(argv: Sequence[str]) -> int:
    """``maze-worker policies ...``: the exit code (0 done, 1 broker unreachable, 2 refused)."""
    from worker.policy_store import releases

    args = parser().parse_args(list(argv))
    try:
        if args.command == "status":
            report = status_of(args.artifact_root, args.name, args.metrics)
            print(json.dumps(report, indent=1) if args.json else status_table(report))
            return EXIT_OK
        if args.command == "release":
            auto = releases.AutoGate(args.min_episodes, args.confidence) if args.auto else None
            state = releases.release_canary(args.artifact_root, args.name, args.version, args.canary, auto)
            event = "released"
        elif args.command == "shadow":
            state, event = _shadow(args)
        elif args.command == "promote":
            state = releases.promote(args.artifact_root, args.name, args.version)
            event = "promoted"
        else:
            state = releases.rollback(args.artifact_root, args.name)
            event = "rolled_back"
    except releases.ReleaseError as err:
        print(f"maze-worker policies: error: {err}", file=sys.stderr)
        return EXIT_CONFIG_ERROR
    print(f"{args.name}: {describe_state(state)} (generation {state.generation})", file=sys.stderr)
    try:
        announce(args.url, args.prefix, state, event)
    except Exception as err:  # noqa: BLE001 - pika's connection errors are many; the state is written
        print(f"maze-worker policies: error: the release state is written, but announcing it failed ({err}); "
              "workers read it after their next reconnect", file=sys.stderr)
        return EXIT_FAILURE
    return EXIT_OK


def _shadow(args: argparse.Namespace) -> tuple[Any, str]:
    from worker.policy_store import releases

    if args.stop == (args.version is not None):
        raise releases.ReleaseError("version: expected a VERSION to run in shadow, or --stop (not both)")
    if args.stop:
        return releases.stop_shadow(args.artifact_root, args.name), "shadow_stopped"
    return releases.start_shadow(args.artifact_root, args.name, args.version), "shadowed"


def describe_state(state: Any) -> str:
    canary = f", canary version {state.canary} for {state.share:g} of new episodes" if state.canary else ""
    gate = state.auto
    auto = (f" (automatic gate: {gate.min_episodes} episodes each, confidence {gate.confidence:g})"
            if state.canary and gate else "")
    shadow = f", version {state.shadow} in shadow" if state.shadow else ""
    return f"stable version {state.stable}{canary}{auto}{shadow}"


def announce(url: str | None, prefix: str, state: Any, event: str) -> None:
    """The release announcement on ``<prefix>.policies`` and the event on ``<prefix>.events``."""
    from worker.broker import probe
    from worker.policy_store.announcements import (
        encode_release_announcement,
        encode_release_event,
        release_event_routing_key,
    )
    from worker.wire import topology

    event_body = encode_release_event(event, state.name, generation=state.generation, stable=state.stable,
                                      canary=state.canary, share=state.share, shadow=state.shadow,
                                      by="operator")
    probe.publish_notices(topology.amqp_url(url), [
        (topology.events_exchange(prefix), topology.events_exchange_type(),
         release_event_routing_key(state.name, event), event_body),
        (topology.policies_exchange(prefix), topology.policies_exchange_type(), "",
         encode_release_announcement(state.name, state.generation)),
    ])


# ------------------------------------------------------------------------------------------------ status


def status_of(artifact_root: str, name: str, metrics_urls: Sequence[str]) -> dict[str, Any]:
    """The release state of ``name``, each served version's manifest, live figures from ``metrics_urls``."""
    from worker.policy_store import releases
    from worker.policy_store.store import get_policy, published_versions

    versions = published_versions(artifact_root, name)
    if not versions:
        raise releases.ReleaseError(releases.unknown_name(artifact_root, name))
    state = releases.read_release(artifact_root, name)
    stable = state.stable if state is not None else versions[-1]
    shown = {"stable": stable, **({"canary": state.canary} if state is not None and state.canary else {}),
             **({"shadow": state.shadow} if state is not None and state.shadow else {})}
    live = scrape(metrics_urls) if metrics_urls else {}
    sides: dict[str, Any] = {}
    for role, version in shown.items():
        published = get_policy(artifact_root, name, version)
        sides[role] = {"version": version, "published": published.created,
                       "best_eval_return": published.best_eval_return, "live": live.get(str(version))}
    return {"name": name, "release": None if state is None else state.to_plain(), "versions": sides,
            "published_versions": versions, "metrics_from": list(metrics_urls)}


SHADOW_FIGURES = {"maze_worker_candidate_decisions_total": "decisions",
                  "maze_worker_candidate_agreed_total": "agreed",
                  "maze_worker_candidate_errors_total": "shadow_errors",
                  "maze_worker_candidate_episodes": "estimate_episodes",
                  "maze_worker_candidate_ess": "ess"}
"""A shadow's figures summed over workers; the estimates are averaged weighted by their episodes."""
WEIGHTED_FIGURES = {"maze_worker_candidate_estimated_return": "estimated_return",
                    "maze_worker_candidate_served_return": "served_return",
                    "maze_worker_candidate_weight_mean": "weight_mean"}


def scrape(urls: Sequence[str]) -> dict[str, dict[str, float | None]]:
    """Per-version figures summed over the workers' ``/metrics``: episodes, mean return and length, errors,
    mean latency; for a shadow version its agreement and estimated return."""
    from prometheus_client.parser import text_string_to_metric_families

    sums: dict[str, dict[str, float]] = {}
    wanted = {**SHADOW_FIGURES, "maze_worker_version_episode_return_sum": "return_sum",
              "maze_worker_version_episode_return_count": "episodes",
              "maze_worker_version_episode_length_sum": "length_sum",
              "maze_worker_version_errors_total": "errors",
              "maze_worker_version_handling_seconds_sum": "latency_sum",
              "maze_worker_version_handling_seconds_count": "states"}
    for url in urls:
        with urllib.request.urlopen(url, timeout=10) as response:  # noqa: S310 - an operator's own URL
            text = response.read().decode("utf-8")
        samples = [sample for family in text_string_to_metric_families(text) for sample in family.samples]
        episodes = {sample.labels.get("policy_version"): sample.value for sample in samples
                    if sample.name == "maze_worker_candidate_episodes"}
        for sample in samples:
            key = wanted.get(sample.name)
            weight = 1.0
            if key is None and sample.name in WEIGHTED_FIGURES:  # this worker's estimate, by its episodes
                key = WEIGHTED_FIGURES[sample.name]
                weight = episodes.get(sample.labels["policy_version"], 0.0)
            if key is not None and math.isfinite(sample.value):
                figures = sums.setdefault(sample.labels["policy_version"], {})
                figures[key] = figures.get(key, 0.0) + weight * sample.value
    return {version: {**_served_figures(f), **_shadow_figures(f)} for version, f in sums.items()}


def _shadow_figures(f: dict[str, float]) -> dict[str, float | None]:
    if "decisions" not in f:
        return {}
    weighted = f.get("estimate_episodes", 0.0)
    return {"decisions": int(f["decisions"]), "shadow_errors": int(f.get("shadow_errors", 0)),
            "agreement": f.get("agreed", 0.0) / f["decisions"] if f["decisions"] else None,
            "estimated_return": f.get("estimated_return", 0.0) / weighted if weighted else None,
            "served_return": f.get("served_return", 0.0) / weighted if weighted else None,
            "weight_mean": f.get("weight_mean", 0.0) / weighted if weighted else None,
            "estimate_episodes": int(weighted), "ess": f.get("ess")}


def _served_figures(f: dict[str, float]) -> dict[str, float | None]:
    return {"episodes": int(f.get("episodes", 0)),
                      "mean_return": f.get("return_sum", 0.0) / f["episodes"] if f.get("episodes") else None,
                      "mean_length": f.get("length_sum", 0.0) / f["episodes"] if f.get("episodes") else None,
                      "errors": int(f.get("errors", 0)), "states": int(f.get("states", 0)),
                      "mean_latency_ms": 1000 * f.get("latency_sum", 0.0) / f["states"] if f.get("states")
                      else None}


def status_table(report: dict[str, Any]) -> str:
    release = report["release"]
    head = "no release state: the latest version serves every episode" if release is None else \
        f"generation {release['generation']}, updated {release['updated']}"
    lines = [f"policy {report['name']}: {head}"]
    rows = [("", *report["versions"].keys())]
    sides = list(report["versions"].values())

    def row(label: str, value: Any) -> None:
        rows.append((label, *(_text(value(side)) for side in sides)))

    row("version", lambda side: side["version"])
    if release is not None and release.get("canary"):
        row("share", lambda side: 1 - release["share"] if side["version"] == release["stable"]
            else release["share"])
    row("published", lambda side: side["published"])
    row("best eval return", lambda side: side["best_eval_return"])
    keys = ["episodes", "mean_return", "mean_length", "errors", "mean_latency_ms"]
    if "shadow" in report["versions"]:  # what the shadow did beside the served versions, and its estimate
        keys += ["decisions", "agreement", "estimated_return", "served_return", "estimate_episodes", "ess",
                 "weight_mean"]
    for key in keys:
        row(key.replace("_", " "), lambda side, key=key: (side["live"] or {}).get(key))
    widths = [max(len(str(cells[i])) for cells in rows) for i in range(len(rows[0]))]
    lines += ["  ".join(str(cell).ljust(width) for cell, width in zip(cells, widths, strict=True)).rstrip()
              for cells in rows]
    decision = (release or {}).get("last_decision")
    if decision:
        lines.append(f"last decision: {decision['action']} by {decision['by']} at {decision['time']}: "
                     f"{decision['reason']}")
    if not report["metrics_from"]:
        lines.append("(live figures: pass the workers' /metrics URLs with --metrics)")
    return "\n".join(lines)


def _text(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 1000 else f"{value:.0f}"
    return str(value)
