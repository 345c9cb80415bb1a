"""Recording overhead: round trips at 64 episodes with ``experience.record=true`` against the same worker
with recording off, in the same run.

Starts two ``maze-worker`` processes side by side (CartPole, an untrained 64-64 MLP TorchPolicy loaded from a
run directory, as ``worker_roundtrip.py``), on two prefixes; the second records every episode (sample 1.0)
to its stream ``<prefix>.experience``. ``../shared/bench/loadgen.py`` drives them alternately at 64
concurrent episodes over ``--rounds`` rounds, in alternating order (so machine load hits both alike); the
medians and the median ratio of each round's two runs (neighbours in time) are reported. The
recording worker's records are counted from the stream afterwards, to show they were all published. Prints
one JSON line; the target is a paired throughput ratio (recording / not recording) >= 0.95.

    .venv/bin/python benchmarks/experience_roundtrip.py [--seconds 8] [--rounds 4]

Needs the broker (MAZE_AMQP_URL or amqp://guest:guest@127.0.0.1:5672/%2F) with the consistent-hash plugin.
"""

import json
import tempfile
import urllib.request
from pathlib import Path

from ab_rounds import ABRuns, ab_parser, ab_prefixes
from worker_batch_step import save_untrained_policy
from worker_roundtrip import URL

from worker.broker.probe import delete_prefix
from worker.experience.reader import read_records
from worker.launcher import WorkerProcess, free_port
from worker.settings import BrokerSettings

TARGET_RATIO = 0.95


def _metrics(port: int, name: str) -> dict[str, float]:
    """The samples of metric ``name`` on the worker's /metrics, by their label text."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    return {line[len(name):].rsplit(" ", 1)[0] or "total": float(line.rsplit(" ", 1)[1])
            for line in text.splitlines() if line.startswith(name)}


def main() -> None:
    args = ab_parser(__doc__.splitlines()[0]).parse_args()
    plain, recording = ab_prefixes("rec")
    ports = {plain: free_port(), recording: free_port()}
    ab = ABRuns(plain, recording)
    with tempfile.TemporaryDirectory() as run_dir:
        save_untrained_policy(Path(run_dir))
        common = ["env=gym_env", "env.name=CartPole-v1", "policy=torch_policy", f"input_dir={run_dir}",
                  "broker.shards=16"]
        overrides = {plain: [], recording: ["experience.record=true"]}
        workers = {prefix: WorkerProcess.start(URL, [*common, f"broker.prefix={prefix}",
                                                     f"metrics.port={ports[prefix]}", *overrides[prefix]],
                                               timeout=None)
                   for prefix in (plain, recording)}
        try:
            for worker in workers.values():
                worker.wait_healthy(90)
            ab.measure(args.rounds, args.episodes, args.seconds)
            dropped = _metrics(ports[recording], "maze_worker_experience_records_dropped_total")
            published = sum(_metrics(ports[recording], "maze_worker_experience_records_total").values())
            steps = sum(_metrics(ports[recording], "maze_worker_experience_steps_total").values())
        finally:
            exits = {prefix: worker.stop() for prefix, worker in workers.items()}
        in_stream = sum(1 for _ in read_records(BrokerSettings(url=URL, prefix=recording), idle_s=1.0))
        delete_prefix(URL, plain)
        delete_prefix(URL, recording, queues=(f"{recording}.experience",))

    off, on = ab.median(plain, "round_trips_per_s"), ab.median(recording, "round_trips_per_s")
    paired, errors = ab.paired_ratio(), ab.errors()
    print(json.dumps({
        "benchmark": "experience_roundtrip", "episodes": args.episodes, "rounds": args.rounds,
        "seconds": args.seconds,
        "round_trips_per_s_recording_off": round(off, 1), "round_trips_per_s_recording_on": round(on, 1),
        "all_off": ab.all(plain),
        "all_on": ab.all(recording),
        "ratio": round(on / off, 3), "paired_ratio": round(paired, 3), "target_ratio": TARGET_RATIO,
        "p99_ms_off": ab.median(plain, "p99_ms"), "p99_ms_on": ab.median(recording, "p99_ms"),
        "records_published": published, "steps_published": steps, "records_dropped": dropped,
        "records_in_stream": in_stream, "errors_or_stalled": errors,
        "worker_exit_codes": list(exits.values()),
        "meets_target": paired >= TARGET_RATIO and errors == 0 and not sum(dropped.values()),
    }))


if __name__ == "__main__":
    main()
