"""Memory and threads per open deployment: RSS beyond the first one, against a thread-per-episode design.

Every deployment is mid-episode (it has acted once, so its greenlet holds a suspended stack). Prints one JSON
line: KiB of RSS per open deployment beyond the first (target: <= 30 KiB), the thread count before and after,
and the baseline measured in the same run: KiB per episode when each episode parks an OS thread (the seed's
design), over fewer episodes.

    .venv/bin/python benchmarks/deployment_memory.py [--deployments 10000] [--threads 500]
"""

import argparse
import gc
import json
import queue
import threading

import numpy as np

from maze_engine import DeploymentFactory


def rss_kib() -> int:
    """Resident set size of this process, from /proc."""
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("VmRSS not found in /proc/self/status")


def deployments_rss(count: int) -> dict[str, float]:
    factory = DeploymentFactory({"_target_": "maze_engine.RandomPolicy", "seed": 0},
                                {"_target_": "maze_engine.make_gym_maze_env", "name": "CartPole-v1"},
                                wrappers={"maze_engine.LogStatsWrapper": {}})
    state = np.zeros(4, dtype=np.float32)
    threads_before = threading.active_count()
    first = factory.create()
    first.act(state, None, False, {})
    gc.collect()
    before = rss_kib()
    deployments = [first]
    for _ in range(count - 1):
        deployment = factory.create()
        deployment.act(state, None, False, {})
        deployments.append(deployment)
    gc.collect()
    after = rss_kib()
    threads_after = threading.active_count()
    assert all(deployment.episode_open for deployment in deployments)
    return {"kib_per_deployment": round((after - before) / (count - 1), 2),
            "threads_before": threads_before, "threads_after": threads_after}


def parked_threads_rss(count: int) -> float:
    """The baseline: one OS thread per open episode, parked on a queue as the seed's design does."""
    release: queue.Queue[None] = queue.Queue()
    ready = threading.Barrier(count + 1)

    def park() -> None:
        ready.wait()
        release.get()

    gc.collect()
    before = rss_kib()
    threads = [threading.Thread(target=park, daemon=True) for _ in range(count)]
    for thread in threads:
        thread.start()
    ready.wait()
    after = rss_kib()
    for _ in threads:
        release.put(None)
    for thread in threads:
        thread.join()
    return round((after - before) / count, 2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--deployments", type=int, default=10_000)
    parser.add_argument("--threads", type=int, default=500)
    args = parser.parse_args()
    measured = deployments_rss(args.deployments)
    per_thread = parked_threads_rss(args.threads)
    print(json.dumps({
        "benchmark": "deployment_memory",
        "open_deployments": args.deployments,
        "kib_per_deployment": measured["kib_per_deployment"],
        "target_kib_per_deployment": 30,
        "threads_before": measured["threads_before"],
        "threads_after": measured["threads_after"],
        "baseline_parked_threads": args.threads,
        "baseline_kib_per_parked_thread": per_thread,
        "ratio_to_baseline": round(measured["kib_per_deployment"] / max(per_thread, 0.01), 3),
    }))


if __name__ == "__main__":
    main()
