"""Round trips through RabbitMQ: maze-worker against the echo worker, in the same run.

Starts the echo worker (``../shared/bench/echo_worker.py`` on a quorum queue with single active
consumer, like the worker's shard queues) and ``maze-worker`` (CartPole, an untrained 64-64 MLP TorchPolicy
loaded from a run directory, LogStatsWrapper) side by side. Each is driven by ``../shared/bench/loadgen.py``
at 64 concurrent episodes and at 1 episode, alternating between the two over ``--rounds`` rounds so machine
load hits both alike; the median of the rounds is reported. Prints one JSON line with round trips per
second, p99 latencies and the ratios (targets: throughput >= 0.8x the echo worker at 64 episodes, p99 <=
1.5x at 1 episode).

    .venv/bin/python benchmarks/worker_roundtrip.py [--seconds 8] [--rounds 3]

Needs the broker (MAZE_AMQP_URL or amqp://guest:guest@127.0.0.1:5672/%2F) with the consistent-hash plugin.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from worker_batch_step import save_untrained_policy

from worker.broker.probe import delete_prefix
from worker.launcher import WorkerProcess

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT.parent / "shared" / "bench"
URL = os.environ.get("MAZE_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2F")
THROUGHPUT_TARGET = 0.8
P99_TARGET = 1.5


def _wait_for_line(process: subprocess.Popen[str], marker: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    assert process.stdout is not None
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if marker in line:
            return
        if not line and process.poll() is not None:
            raise RuntimeError(f"process exited with {process.returncode} before printing {marker!r}")
    raise RuntimeError(f"no {marker!r} within {timeout} s")


def _loadgen(episodes: int, seconds: float, routing_key: str, exchange: str = "") -> dict[str, Any]:
    command = [sys.executable, str(BENCH / "loadgen.py"), "--episodes", str(episodes),
               "--seconds", str(seconds), "--routing-key", routing_key]
    if exchange:
        command += ["--exchange", exchange]
    result = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "AMQP_URL": URL},
                            timeout=seconds + 60, check=True)
    return json.loads(result.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=8.0, help="measured seconds per loadgen run")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--shards", type=int, default=16)
    args = parser.parse_args()

    tag = uuid.uuid4().hex[:8]
    echo_queue, prefix = f"bench.echo.{tag}", f"bench-{tag}"
    environment = {**os.environ, "AMQP_URL": URL, "MAZE_AMQP_URL": URL, "QUEUE_TYPE": "quorum",
                   "PYTHONUNBUFFERED": "1"}
    with tempfile.TemporaryDirectory() as run_dir:
        save_untrained_policy(Path(run_dir))
        echo = subprocess.Popen([sys.executable, str(BENCH / "echo_worker.py"), echo_queue], env=environment,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        worker = WorkerProcess.start(URL, ["env=gym_env", "env.name=CartPole-v1", "policy=torch_policy",
                                           f"input_dir={run_dir}", f"broker.prefix={prefix}",
                                           f"broker.shards={args.shards}"], timeout=None)
        results: dict[str, list[dict[str, Any]]] = {"echo64": [], "worker64": [], "echo1": [], "worker1": []}
        try:
            _wait_for_line(echo, "echo worker ready", 30)
            worker.wait_healthy(90)
            for _ in range(args.rounds):
                results["echo64"].append(_loadgen(64, args.seconds, echo_queue))
                results["worker64"].append(_loadgen(64, args.seconds, "{episode}", f"{prefix}.states"))
                results["echo1"].append(_loadgen(1, args.seconds, echo_queue))
                results["worker1"].append(_loadgen(1, args.seconds, "{episode}", f"{prefix}.states"))
        finally:
            echo.terminate()
            worker_exit = worker.stop()
            echo.wait(timeout=30)
            delete_prefix(URL, prefix, queues=(echo_queue,))

    def median(name: str, key: str) -> float:
        return float(statistics.median(run[key] for run in results[name]))

    errors = sum(run["errors"] + run["stalled"] for runs in results.values() for run in runs)
    echo64, worker64 = median("echo64", "round_trips_per_s"), median("worker64", "round_trips_per_s")
    echo_p99, worker_p99 = median("echo1", "p99_ms"), median("worker1", "p99_ms")
    throughput_ratio, p99_ratio = worker64 / echo64, worker_p99 / echo_p99
    print(json.dumps({
        "benchmark": "worker_roundtrip", "queue_type": "quorum", "rounds": args.rounds,
        "seconds": args.seconds,
        "echo_round_trips_per_s_64": round(echo64, 1), "worker_round_trips_per_s_64": round(worker64, 1),
        "throughput_ratio": round(throughput_ratio, 3), "throughput_target": THROUGHPUT_TARGET,
        "echo_p99_ms_1": round(echo_p99, 3), "worker_p99_ms_1": round(worker_p99, 3),
        "p99_ratio": round(p99_ratio, 3), "p99_target": P99_TARGET,
        "echo_p50_ms_1": median("echo1", "p50_ms"), "worker_p50_ms_1": median("worker1", "p50_ms"),
        "errors_or_stalled": errors, "worker_exit_code": worker_exit,
        "meets_targets": throughput_ratio >= THROUGHPUT_TARGET and p99_ratio <= P99_TARGET and errors == 0,
    }))


if __name__ == "__main__":
    main()
