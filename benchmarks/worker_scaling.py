"""Agent workers scaled out on one machine: aggregate round trips with 1, 2 and 3 worker processes, and the
pause an episode sees when its shard is handed over.

Starts ``maze-worker`` processes (CartPole, an untrained 64-64 MLP TorchPolicy from a run directory) one
after the other on one prefix. With 1, then 2, then 3 of them (each time once the shards are balanced),
``../shared/bench/loadgen.py`` drives 64 concurrent closed-loop episodes for ``--seconds``. The hand-off pause
is measured with a closed loop of this script's own (64 episodes), which reads the ``worker`` key of each
reply: for every episode that changes worker during a planned move (a worker joining: 1 -> 2 and 2 -> 3;
a SIGTERM: 3 -> 2), the pause is the time from its last reply by the old worker (the old owner then starts
handing its shard over) to its first reply by the new one. The ordinary round trip, measured in the same
loop before the move, is the baseline. Prints one JSON line. On a 2-core machine do not expect linear
scaling: the producers, the broker and the workers share the cores.

    .venv/bin/python benchmarks/worker_scaling.py [--seconds 8] [--shards 16]

Needs the broker (MAZE_AMQP_URL or amqp://guest:guest@127.0.0.1:5672/%2F) with the consistent-hash plugin.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import msgpack
import numpy as np
import pika
from worker_batch_step import save_untrained_policy

from worker.broker.probe import delete_prefix
from worker.launcher import WorkerProcess
from worker.wire.protocol import PROTOCOL_VERSION, StateMessage, encode_state

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT.parent / "shared" / "bench"
URL = os.environ.get("MAZE_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2F")


def start_worker(prefix: str, shards: int, run_dir: str) -> WorkerProcess:
    """A maze-worker child serving the untrained policy of ``run_dir``; returns once it is healthy."""
    return WorkerProcess.start(URL, ["env=gym_env", "env.name=CartPole-v1", "policy=torch_policy",
                                     f"input_dir={run_dir}", f"broker.prefix={prefix}",
                                     f"broker.shards={shards}", "stats.interval_s=0"])


def wait_balanced(workers: list[WorkerProcess], shards: int, timeout: float = 30) -> float:
    """Seconds until every worker's last ownership line gives it floor or ceil of shards / workers."""
    started = time.monotonic()
    allowed = {shards // len(workers), -(-shards // len(workers))}
    while True:
        counts = [worker.owned() for worker in workers]
        if all(count in allowed for count in counts) and sum(count or 0 for count in counts) == shards:
            return time.monotonic() - started
        if time.monotonic() - started > timeout:
            raise RuntimeError(f"shards not balanced within {timeout} s: {counts}")
        time.sleep(0.05)


def loadgen(prefix: str, seconds: float) -> dict[str, Any]:
    command = [sys.executable, str(BENCH / "loadgen.py"), "--episodes", "64", "--seconds", str(seconds),
               "--exchange", f"{prefix}.states", "--routing-key", "{episode}"]
    result = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "AMQP_URL": URL},
                            timeout=seconds + 60, check=True)
    return json.loads(result.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


class PauseLoop:
    """64 closed-loop episodes in a thread, keeping each reply's time and worker."""

    def __init__(self, prefix: str, episodes: int = 64, length: int = 10_000) -> None:
        self.prefix, self.length = prefix, length
        self.replies: list[tuple[float, str, str | None]] = []
        self.errors = 0
        self.round_trips: list[float] = []
        self._sent: dict[str, tuple[str, int, float]] = {}
        self._stop = threading.Event()
        self._episodes = episodes
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        connection = pika.BlockingConnection(pika.URLParameters(URL))
        channel = connection.channel()
        queue = channel.queue_declare("", exclusive=True).method.queue
        rng = np.random.default_rng(0)

        def send(episode: str, seq: int) -> None:
            cid = uuid.uuid4().hex
            body = encode_state(StateMessage(PROTOCOL_VERSION, episode, seq,
                                             (rng.normal(size=4) * 0.05).tolist(), None if seq == 0 else 1.0))
            self._sent[cid] = (episode, seq, time.perf_counter())
            channel.basic_publish(f"{self.prefix}.states", episode, body, pika.BasicProperties(
                reply_to=queue, correlation_id=cid, content_type="application/msgpack"))

        def on_reply(_channel: Any, _method: Any, properties: Any, body: bytes) -> None:
            episode, seq, sent = self._sent.pop(properties.correlation_id)
            reply = msgpack.unpackb(body)
            now = time.perf_counter()
            if reply.get("error"):
                self.errors += 1
            self.replies.append((now, episode, reply.get("worker")))
            self.round_trips.append(now - sent)
            send(episode, seq + 1) if seq + 1 < self.length else send(uuid.uuid4().hex, 0)

        channel.basic_consume(queue, on_reply, auto_ack=True)
        for _ in range(self._episodes):
            send(uuid.uuid4().hex, 0)
        while not self._stop.is_set():
            connection.process_data_events(time_limit=0.05)
        connection.close()

    def sent_times(self) -> list[tuple[str, int, float]]:
        """The states sent and not answered yet."""
        return list(self._sent.values())

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def pauses(self, move_at: float) -> list[float]:
        """Per episode that changed worker after ``move_at``: seconds from its last reply by the old worker
        (where the old owner stopped answering it to hand it over) to its first reply by the new one."""
        last: dict[str, tuple[float, str | None]] = {}
        pauses: dict[str, float] = {}
        for at, episode, worker in list(self.replies):
            previous = last.get(episode)
            if at >= move_at and previous is not None and previous[1] != worker and episode not in pauses:
                pauses[episode] = at - previous[0]
            last[episode] = (at, worker)
        return list(pauses.values())


def move(loop: PauseLoop, action: Any, settle: Any) -> dict[str, Any]:
    """Run ``action`` (the planned move) under ``loop``; returns the pause figures of the moved episodes."""
    time.sleep(2.0)
    baseline = statistics.median(loop.round_trips[-500:]) if loop.round_trips else float("nan")
    started = time.perf_counter()
    action()
    settle()
    time.sleep(2.0)
    pauses = loop.pauses(started)
    now = time.perf_counter()
    return {"moved_episodes": len(pauses),
            "waiting_over_1s": sum(now - sent > 1.0 for _, _, sent in list(loop.sent_times())),
            "pause_ms_median": round(statistics.median(pauses) * 1e3, 1) if pauses else None,
            "pause_ms_max": round(max(pauses) * 1e3, 1) if pauses else None,
            "round_trip_ms_median_before": round(baseline * 1e3, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=8.0, help="measured seconds per loadgen run")
    parser.add_argument("--shards", type=int, default=16)
    args = parser.parse_args()
    prefix, shards = f"bench-{uuid.uuid4().hex[:8]}", args.shards
    workers: list[WorkerProcess] = []
    throughput: dict[str, Any] = {}
    moves: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as run_dir:
        save_untrained_policy(Path(run_dir))
        try:
            workers.append(start_worker(prefix, shards, run_dir))
            wait_balanced(workers, shards)
            throughput["1"] = loadgen(prefix, args.seconds)
            for count in (2, 3):
                loop = PauseLoop(prefix)
                moves[f"join_{count - 1}_to_{count}"] = move(
                    loop, lambda: workers.append(start_worker(prefix, shards, run_dir)),
                    lambda: wait_balanced(workers, shards))
                loop.close()
                throughput[str(count)] = loadgen(prefix, args.seconds)
            loop = PauseLoop(prefix)
            exit_codes: list[int] = []
            moves["sigterm_3_to_2"] = move(loop, lambda: exit_codes.append(workers.pop().stop()),
                                           lambda: wait_balanced(workers, shards))
            loop.close()
            pause_errors = loop.errors
        finally:
            for worker in workers:
                worker.stop()
            delete_prefix(URL, prefix)
    rates = {count: run["round_trips_per_s"] for count, run in throughput.items()}
    errors = sum(run["errors"] + run["stalled"] for run in throughput.values())
    print(json.dumps({
        "benchmark": "worker_scaling", "shards": shards, "episodes": 64, "seconds": args.seconds,
        "cpus": os.cpu_count(),
        "round_trips_per_s": rates,
        "speedup_2": round(rates["2"] / rates["1"], 3), "speedup_3": round(rates["3"] / rates["1"], 3),
        "p99_ms": {count: run["p99_ms"] for count, run in throughput.items()},
        "handoff": moves, "errors_or_stalled": errors + pause_errors, "sigterm_exit_code": exit_codes[0],
    }))


if __name__ == "__main__":
    main()
