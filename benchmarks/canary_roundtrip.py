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

import argparse
import json
import statistics
import tempfile
import urllib.request
import uuid
from pathlib import Path

from worker_batch_step import save_untrained_policy
from worker_roundtrip import URL, _loadgen

from worker.broker.probe import delete_prefix
from worker.launcher import WorkerProcess, free_port
from worker.policy_store import releases
from worker.policy_store.store import publish_policy

TARGET_RATIO = 0.95
NAME = "bench"


def _canary_states(port: int) -> float:
    """States the canary worker answered for version 2 (its canary), from its /metrics."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    prefix = 'maze_worker_version_handling_seconds_count{policy_version="2"}'
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(prefix))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=8.0, help="measured seconds per loadgen run")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--episodes", type=int, default=64)
    parser.add_argument("--share", type=float, default=0.2)
    args = parser.parse_args()

    tag = uuid.uuid4().hex[:8]
    plain, canary = f"bench-plain-{tag}", f"bench-canary-{tag}"
    ports = {plain: free_port(), canary: free_port()}
    runs: dict[str, list[dict]] = {plain: [], canary: []}
    with tempfile.TemporaryDirectory() as directory:
        roots = {plain: Path(directory) / "plain", canary: Path(directory) / "canary"}
        for number in (1, 2):
            run = save_untrained_policy(Path(directory) / f"run-{number}")
            for root in roots.values():
                publish_policy(root, NAME, run)
        releases.release_canary(roots[canary], NAME, 2, args.share)
        workers = {prefix: WorkerProcess.start(URL, [
            "env=gym_env", "env.name=CartPole-v1", "policy=published_policy", f"policy.name={NAME}",
            f"artifact_root={roots[prefix]}", "broker.shards=16", f"broker.prefix={prefix}",
            f"metrics.port={ports[prefix]}"], timeout=None) for prefix in (plain, canary)}
        try:
            for worker in workers.values():
                worker.wait_healthy(90)
            for number in range(args.rounds):  # off-on, then on-off: a machine slowing down hits both alike
                for prefix in ((plain, canary) if number % 2 == 0 else (canary, plain)):
                    runs[prefix].append(_loadgen(args.episodes, args.seconds, "{episode}",
                                                 f"{prefix}.states"))
            on_canary = _canary_states(ports[canary])
        finally:
            exits = {prefix: worker.stop() for prefix, worker in workers.items()}
        for prefix in runs:
            delete_prefix(URL, prefix)

    def median(prefix: str, key: str) -> float:
        return float(statistics.median(run[key] for run in runs[prefix]))

    off, on = median(plain, "round_trips_per_s"), median(canary, "round_trips_per_s")
    paired = statistics.median(run_on["round_trips_per_s"] / run_off["round_trips_per_s"]
                               for run_off, run_on in zip(runs[plain], runs[canary], strict=True))
    errors = sum(run["errors"] + run["stalled"] for prefix in runs for run in runs[prefix])
    print(json.dumps({
        "benchmark": "canary_roundtrip", "episodes": args.episodes, "rounds": args.rounds,
        "seconds": args.seconds, "share": args.share,
        "round_trips_per_s_no_canary": round(off, 1), "round_trips_per_s_canary": round(on, 1),
        "all_no_canary": [round(run["round_trips_per_s"], 1) for run in runs[plain]],
        "all_canary": [round(run["round_trips_per_s"], 1) for run in runs[canary]],
        "ratio": round(on / off, 3), "paired_ratio": round(paired, 3), "target_ratio": TARGET_RATIO,
        "p99_ms_no_canary": median(plain, "p99_ms"), "p99_ms_canary": median(canary, "p99_ms"),
        "states_on_the_canary": on_canary,
        "errors_or_stalled": errors, "worker_exit_codes": list(exits.values()),
        "meets_target": paired >= TARGET_RATIO and errors == 0 and on_canary > 0,
    }))


if __name__ == "__main__":
    main()
