"""Serving cost of a shadow candidate: round trips at 64 episodes with version 2 in shadow beside the served
version 1 against the same worker without a shadow, in the same run.

Two ``maze-worker`` processes serve ``policy=published_policy`` (CartPole, untrained 64-64 MLPs) from two
artifact roots, both with the release state stable 1 (version 2 published too, ``ab_rounds.published_pair``);
one also runs version 2 in shadow, written with ``releases.start_shadow`` before it starts, so its first
release check after connecting must load the shadow (checked on its /metrics: ``maze_worker_shadow_version`` 2
before measuring, and ``maze_worker_candidate_decisions_total{policy_version="2"}`` growing during the run;
the benchmark fails otherwise). ``../shared/bench/loadgen.py`` (200-step episodes with fresh ids) drives them
alternately over ``--rounds`` rounds in alternating order; medians and the median ratio of each round's
neighbouring runs are reported, with the shadow's decisions and agreement. Where the broker and the load
generator bound the round trips (a small machine), the ratio hides the shadow's work: each worker's CPU time
per state handled over the whole measurement (``/proc``, both workers idle alike while the other is driven) is
reported too.

Target: the worker's CPU per state with the shadow at most 2x without, no errors. A shadow does the work of
the policy twice for every state (a second wrapper stack and forward pass, the log-probability of the served
action under the shadow, and the served policy's own log-probabilities, all in the reply path), so 2x is what
doing it twice may cost; the round trips' paired ratio is reported beside it: near 1 where the broker and the
load generator bound them, towards 1 / the CPU ratio where the worker's CPU does. (A canary split's target is
a round-trip ratio of 0.95: it only moves some episodes to another net.)

    .venv/bin/python benchmarks/shadow_roundtrip.py [--seconds 8] [--rounds 4]
"""

import json
import os
import time
import urllib.request
from pathlib import Path

from ab_rounds import NAME, ABRuns, ab_parser, ab_prefixes, published_pair

from worker.launcher import WorkerProcess
from worker.policy_store import releases

TARGET_CPU_RATIO = 2.0
SHADOW = 2
SHADOW_LOAD_TIMEOUT_S = 30.0
SHADOW_VERSION = "maze_worker_shadow_version"
DECISIONS = f'maze_worker_candidate_decisions_total{{policy_version="{SHADOW}"}}'
AGREEMENT = f'maze_worker_candidate_agreement{{policy_version="{SHADOW}"}}'
CANDIDATE_ERRORS = f'maze_worker_candidate_errors_total{{policy_version="{SHADOW}"}}'
ESTIMATED_RETURN = f'maze_worker_candidate_estimated_return{{policy_version="{SHADOW}"}}'
ESS = f'maze_worker_candidate_ess{{policy_version="{SHADOW}"}}'
EPISODES = f'maze_worker_candidate_episodes{{policy_version="{SHADOW}"}}'
STATES = "maze_worker_states_total"


class ShadowDidNotAct(RuntimeError):
    """The shadow worker did not load its shadow, or the shadow decided nothing while measured."""


def _samples(port: int) -> dict[str, float]:
    """The worker's /metrics as ``{name{labels}: value}``."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    return {key: float(value) for key, _, value in (line.rpartition(" ") for line in text.splitlines())
            if key and not key.startswith("#")}


def _cpu_seconds(worker: WorkerProcess) -> float:
    """User and system CPU time of the worker process, all its threads."""
    fields = Path(f"/proc/{worker.process.pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _rounded(samples: dict[str, float], key: str, digits: int) -> float | None:
    """A sample rounded, None where the worker has none yet (JSON has no NaN)."""
    value = samples.get(key)
    return None if value is None or value != value else round(value, digits)


def _wait_for_shadow(worker: WorkerProcess, port: int) -> None:
    """Wait until the worker serves the shadow; it comes with the reloader's first release check."""
    deadline = time.monotonic() + SHADOW_LOAD_TIMEOUT_S
    while _samples(port).get(SHADOW_VERSION) != SHADOW:
        if time.monotonic() > deadline:
            raise ShadowDidNotAct(f"{SHADOW_VERSION} is {_samples(port).get(SHADOW_VERSION)}, not {SHADOW}, "
                                  f"{SHADOW_LOAD_TIMEOUT_S:g} s after the worker became healthy with a "
                                  f"release state naming version {SHADOW} in shadow; its log:\n"
                                  f"{worker.log()}")
        time.sleep(0.2)


def main() -> None:
    args = ab_parser(__doc__.splitlines()[0]).parse_args()
    plain, shadow = ab_prefixes("shadow")
    ab = ABRuns(plain, shadow)
    # Both serve version 1 through a release state (promoted over version 2); the second runs 2 in shadow.
    with published_pair(plain, shadow, lambda root: releases.start_shadow(root, NAME, SHADOW),
                        prepare=lambda root: releases.promote(root, NAME, 1)) as pair:
        workers, ports = pair.workers, pair.ports
        _wait_for_shadow(workers[shadow], ports[shadow])
        start = {prefix: _samples(port) for prefix, port in ports.items()}
        cpu = {prefix: -_cpu_seconds(worker) for prefix, worker in workers.items()}
        ab.measure(args.rounds, args.episodes, args.seconds)
        cpu = {prefix: cpu[prefix] + _cpu_seconds(worker) for prefix, worker in workers.items()}
        final = {prefix: _samples(port) for prefix, port in ports.items()}
    exits = pair.exits

    figures, before = final[shadow], start[shadow].get(DECISIONS, 0.0)
    decisions = figures.get(DECISIONS, 0.0) - before
    cpu_us = {prefix: 1e6 * cpu[prefix] / (final[prefix][STATES] - start[prefix][STATES]) for prefix in cpu}
    if decisions <= 0:
        raise ShadowDidNotAct(f"{DECISIONS} did not grow while measured ({before:g} before, "
                              f"{figures.get(DECISIONS, 0.0):g} after)")
    off, on = ab.median(plain, "round_trips_per_s"), ab.median(shadow, "round_trips_per_s")
    paired, errors = ab.paired_ratio(), ab.errors()
    print(json.dumps({
        "benchmark": "shadow_roundtrip", "episodes": args.episodes, "rounds": args.rounds,
        "seconds": args.seconds,
        "served_versions": [final[prefix].get("maze_worker_policy_version") for prefix in (plain, shadow)],
        "shadow_versions": [final[prefix].get(SHADOW_VERSION) for prefix in (plain, shadow)],
        "round_trips_per_s_no_shadow": round(off, 1), "round_trips_per_s_shadow": round(on, 1),
        "all_no_shadow": ab.all(plain),
        "all_shadow": ab.all(shadow),
        "ratio": round(on / off, 3), "paired_ratio": round(paired, 3),
        "p50_ms_no_shadow": round(ab.median(plain, "p50_ms"), 3),
        "p50_ms_shadow": round(ab.median(shadow, "p50_ms"), 3),
        "p99_ms_no_shadow": round(ab.median(plain, "p99_ms"), 3),
        "p99_ms_shadow": round(ab.median(shadow, "p99_ms"), 3),
        "worker_cpu_us_per_state_no_shadow": round(cpu_us[plain], 1),
        "worker_cpu_us_per_state_shadow": round(cpu_us[shadow], 1),
        "worker_cpu_ratio": round(cpu_us[shadow] / cpu_us[plain], 3), "target_cpu_ratio": TARGET_CPU_RATIO,
        "shadow_decisions": decisions, "shadow_agreement": _rounded(figures, AGREEMENT, 3),
        "shadow_errors": figures.get(CANDIDATE_ERRORS, 0.0),
        "shadow_estimated_return": _rounded(figures, ESTIMATED_RETURN, 1),
        "shadow_ess": _rounded(figures, ESS, 1), "shadow_episodes": figures.get(EPISODES),
        "errors_or_stalled": errors, "worker_exit_codes": list(exits.values()),
        "meets_target": cpu_us[shadow] <= TARGET_CPU_RATIO * cpu_us[plain] and errors == 0,
    }))


if __name__ == "__main__":
    main()
