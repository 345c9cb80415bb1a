"""``make demo``: maze-worker serving CartPole to a simulated production system, end to end.

1. Find a broker (``MAZE_AMQP_URL`` or the local one); without one, say how to start one and exit 1.
2. Start ``maze-worker`` on CartPole as a child process with a prefix of its own.
3. Play episodes the way a production system would: gymnasium CartPole envs, each asking the worker for its
   next action through ``worker.client``, many episodes in flight from one thread.
4. Print the episode returns and the throughput, stop the worker with SIGTERM and check it exits cleanly.

``--producer-only`` skips 2 and 4 and plays against workers that already serve ``--prefix`` (Docker Compose).
Arguments after ``--`` are passed to maze-worker as config overrides
(``python -m worker.demo -- policy=torch_policy input_dir=outputs/...``).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import sys
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field

import gymnasium as gym

from worker.broker import probe
from worker.client import MazeClient
from worker.client.errors import MazeClientError, ReplyError, TopologyMissing, raise_for_error
from worker.launcher import WorkerDidNotStart, WorkerProcess
from worker.wire import topology

LOCAL_URL = "amqp://guest:guest@127.0.0.1:5672/%2F"
ENV_NAME = "CartPole-v1"

BROKER_HELP = """\
No RabbitMQ broker reachable at {url} ({reason}).
Start one, then run `make demo` again. Any of:
  docker compose -f deploy/docker-compose.yml up rabbitmq      # Docker: the broker with its plugins
  rabbitmq-server -detached                                    # a local install ...
  rabbitmq-plugins enable rabbitmq_consistent_hash_exchange    # ... with the plugin the worker needs
  export MAZE_AMQP_URL=amqp://user:password@host:5672/%2F      # or point the demo at a broker elsewhere"""

PLUGIN_HELP = """\
The broker at {url} lacks the consistent-hash exchange the worker shards episodes with. Enable it:
  rabbitmq-plugins enable rabbitmq_consistent_hash_exchange
(with Docker: docker compose -f deploy/docker-compose.yml up rabbitmq, which enables it)"""


def broker_problem(url: str) -> str | None:
    """None if ``url`` reaches a broker with the consistent-hash exchange, else what to tell the user."""
    problem = probe.broker_problem(url)
    if problem is None:
        return None
    if problem.kind == probe.BrokerProblem.PLUGIN_MISSING:
        return PLUGIN_HELP.format(url=topology.mask_url(url))
    return BROKER_HELP.format(url=topology.mask_url(url), reason=problem.detail)


# ------------------------------------------------------------------------------------------------ the worker

def start_worker(url: str, prefix: str, overrides: Sequence[str]) -> WorkerProcess:
    """maze-worker on CartPole as a child process whose log lines are echoed with a ``[worker]`` tag."""
    return WorkerProcess.start(url, ["env=gym_env", f"env.name={ENV_NAME}", f"broker.prefix={prefix}",
                                     "stats.interval_s=5", *overrides], echo="worker", timeout=None)


# ------------------------------------------------------------------------------------ the production system

@dataclass
class _Running:
    env: gym.Env
    episode: str
    seq: int = 0
    episode_return: float = 0.0
    sent_at: float = 0.0


@dataclass
class ProductionReport:
    """What the simulated production system saw."""

    returns: list[float] = field(default_factory=list)
    round_trips: int = 0
    latencies_ms: list[float] = field(default_factory=list)
    errors: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0

    def lines(self) -> list[str]:
        out = [f"episodes finished: {len(self.returns)}"]
        if self.returns:
            last = " ".join(f"{value:.0f}" for value in self.returns[-10:])
            out.append(f"episode returns: mean {statistics.fmean(self.returns):.1f}, "
                       f"min {min(self.returns):.0f}, max {max(self.returns):.0f}; last ten: {last}")
        out.append(f"round trips: {self.round_trips} in {self.seconds:.1f} s = "
                   f"{self.round_trips / max(self.seconds, 1e-9):.0f} actions/s")
        if self.latencies_ms:
            ordered = sorted(self.latencies_ms)
            p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
            out.append(f"latency: p50 {statistics.median(ordered):.2f} ms, p99 {p99:.2f} ms")
        out.append("error replies: " + (", ".join(f"{code} {count}" for code, count in self.errors.items())
                                        if self.errors else "none"))
        return out


def run_production(client: MazeClient, episodes: int, seconds: float, seed: int = 0) -> ProductionReport:
    """Keep ``episodes`` CartPole episodes in flight for ``seconds``; each asks the worker for each action."""
    report = ProductionReport()
    running: dict[str, _Running] = {}
    seeds = iter(range(seed, seed + 10**9))

    def start_episode() -> None:
        env = gym.make(ENV_NAME)
        state, _ = env.reset(seed=next(seeds))
        item = _Running(env, f"demo-{uuid.uuid4().hex[:12]}", sent_at=time.perf_counter())
        running[item.episode] = item
        client.send(item.episode, 0, state.tolist())

    start = time.perf_counter()
    for _ in range(episodes):
        start_episode()
    while running:
        for reply in client.poll(timeout=1.0):
            item = running.get(reply.episode or "")
            if item is None or reply.seq != item.seq:
                continue
            report.round_trips += 1
            report.latencies_ms.append((time.perf_counter() - item.sent_at) * 1000)
            try:
                action = raise_for_error(reply)
            except ReplyError as err:
                code = reply.error.code.value if reply.error else "error"
                report.errors[code] = report.errors.get(code, 0) + 1
                print(f"episode {item.episode}: {err}", flush=True)
                action, done = None, True
            else:
                done = action is None  # the worker's answer to a final state
            if done:
                if action is None and reply.error is None:
                    report.returns.append(item.episode_return)
                del running[item.episode]
                item.env.close()
                if time.perf_counter() - start < seconds:
                    start_episode()
                continue
            state, reward, terminated, truncated, _ = item.env.step(action)
            item.episode_return += float(reward)
            item.seq += 1
            item.sent_at = time.perf_counter()
            client.send(item.episode, item.seq, state.tolist(), reward=float(reward),
                        done=bool(terminated or truncated))
    report.seconds = time.perf_counter() - start
    return report


def _client(url: str, prefix: str, wait_s: float) -> MazeClient:
    """A client for ``prefix``, waiting up to ``wait_s`` for a worker to declare the topology."""
    deadline = time.monotonic() + wait_s
    while True:
        try:
            return MazeClient(url, prefix=prefix, timeout=30)
        except TopologyMissing:
            if time.monotonic() > deadline:
                raise
            time.sleep(1)


def _delete_topology(url: str, prefix: str) -> None:
    """Remove the demo's exchanges and queues so repeated demos leave nothing behind."""
    with contextlib.suppress(Exception):  # a broker gone by now leaves nothing to tidy
        probe.delete_prefix(url, prefix)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m worker.demo", description=__doc__.splitlines()[0],
                                     epilog="Arguments after -- go to maze-worker as config overrides.")
    parser.add_argument("--episodes", type=int, default=16, help="concurrent episodes (default 16)")
    parser.add_argument("--seconds", type=float, default=10.0, help="how long to start new episodes")
    parser.add_argument("--prefix", default=None,
                        help="broker prefix (default: a fresh one; 'maze' with --producer-only)")
    parser.add_argument("--url", default=None, help="broker URL (default: MAZE_AMQP_URL, else the local one)")
    parser.add_argument("--producer-only", action="store_true",
                        help="play against workers already serving --prefix instead of starting one")
    args, overrides = parser.parse_known_args(argv)
    overrides = [item for item in overrides if item != "--"]
    url = args.url or os.environ.get(topology.AMQP_URL_ENV) or LOCAL_URL
    problem = broker_problem(url)
    if problem is not None:
        print(problem, file=sys.stderr)
        return 1
    print(f"broker: {topology.mask_url(url)}", flush=True)
    if args.producer_only:
        prefix = args.prefix or topology.DEFAULT_PREFIX
        with _client(url, prefix, wait_s=120) as client:
            report = run_production(client, args.episodes, args.seconds)
        print("\n".join(report.lines()), flush=True)
        return 0
    prefix = args.prefix or f"demo-{uuid.uuid4().hex[:8]}"
    print(f"starting maze-worker on {ENV_NAME} with broker.prefix={prefix}", flush=True)
    worker = start_worker(url, prefix, overrides)
    try:
        try:
            worker.wait_healthy(timeout=120)
        except WorkerDidNotStart:
            print("maze-worker did not start (its output is above)", file=sys.stderr)
            return 1
        print(f"playing {args.episodes} concurrent {ENV_NAME} episodes for {args.seconds:g} s "
              "through worker.client", flush=True)
        try:
            with MazeClient(url, prefix=prefix, timeout=30) as client:
                report = run_production(client, args.episodes, args.seconds)
        except MazeClientError as err:
            print(f"the production system failed: {err}", file=sys.stderr)
            return 1
    finally:
        print("stopping maze-worker (SIGTERM)", flush=True)
        exit_code = worker.stop()
        _delete_topology(url, prefix)
    print("\n".join(report.lines()), flush=True)
    if exit_code != 0:
        print(f"maze-worker exited with {exit_code}, expected 0", file=sys.stderr)
        return 1
    print("maze-worker stopped cleanly (exit code 0)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
