"""Serving cost of a canary split: round trips at 64 episodes with a canary active (20% of new episodes on a
second version, so most batches take two forward passes) against the same worker without one, in the same
run.

Two ``maze-worker`` processes serve ``policy=published_policy`` (CartPole, untrained 64-64 MLPs) from two
artifact roots: one serves version 2 to every episode, the other has the release state stable 1, canary 2
at 0.2. ``../shared/bench/loadgen.py`` (200-step episodes with fresh ids) drives them alternately over
``--rounds`` rounds in alternating order; medians and the median ratio of each round's neighbouring runs are
reported. Target: paired ratio (canary / no canary) >= 0.95, no errors.

    .venv/bin/python benchmarks/canary_roundtrip.py [--seconds 8] [--rounds 4]
"""

import json
import urllib.request

from ab_rounds import NAME, ABRuns, ab_parser, ab_prefixes, published_pair

from worker.policy_store import releases

TARGET_RATIO = 0.95


def _canary_states(port: int) -> float:
    """States the canary worker answered for version 2 (its canary), from its /metrics."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    prefix = 'maze_worker_version_handling_seconds_count{policy_version="2"}'
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(prefix))


def main() -> None:
    parser = ab_parser(__doc__.splitlines()[0])
    parser.add_argument("--share", type=float, default=0.2)
    args = parser.parse_args()
    plain, canary = ab_prefixes("canary")
    ab = ABRuns(plain, canary)
    release = lambda root: releases.release_canary(root, NAME, 2, args.share)  # noqa: E731 - one line
    with published_pair(plain, canary, release) as pair:
        ab.measure(args.rounds, args.episodes, args.seconds)
        on_canary = _canary_states(pair.ports[canary])
    exits = pair.exits

    off, on = ab.median(plain, "round_trips_per_s"), ab.median(canary, "round_trips_per_s")
    paired, errors = ab.paired_ratio(), ab.errors()
    print(json.dumps({
        "benchmark": "canary_roundtrip", "episodes": args.episodes, "rounds": args.rounds,
        "seconds": args.seconds, "share": args.share,
        "round_trips_per_s_no_canary": round(off, 1), "round_trips_per_s_canary": round(on, 1),
        "all_no_canary": ab.all(plain),
        "all_canary": ab.all(canary),
        "ratio": round(on / off, 3), "paired_ratio": round(paired, 3), "target_ratio": TARGET_RATIO,
        "p99_ms_no_canary": ab.median(plain, "p99_ms"), "p99_ms_canary": ab.median(canary, "p99_ms"),
        "states_on_the_canary": on_canary,
        "errors_or_stalled": errors, "worker_exit_codes": list(exits.values()),
        "meets_target": paired >= TARGET_RATIO and errors == 0 and on_canary > 0,
    }))


if __name__ == "__main__":
    main()
