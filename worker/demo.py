"""``make demo``: the whole product end to end, on this machine (``worker/demo_tour.py``).

A job worker and an agent worker serving the published policy ``cartpole``; a fresh version 1, CartPole
episodes played through ``worker.client``; a PPO training job submitted as a message that publishes version 2,
followed epoch by epoch; the fleet moving to version 2 without a restart; returns per version before and
after, a PNG of the returns over time, the time each part took; both workers stopped cleanly.

The broker is ``--url`` or ``MAZE_AMQP_URL`` when given (used as it is), else one is found or provisioned
(``worker/broker/provision.py``: the local RabbitMQ, started and its plugin enabled, else a Docker container);
without any, the demo says how to get one and exits 1.

``--serve-only`` is the quick demo: one agent worker on an untrained policy, episodes for ``--seconds``, the
returns and throughput. ``--producer-only`` plays against workers that already serve ``--prefix`` (Docker
Compose). Arguments after ``--`` go to the workers as config overrides
(``python -m worker.demo --serve-only -- policy=torch_policy input_dir=outputs/...``).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time
import uuid
from collections.abc import Sequence
from pathlib import Path

from worker.broker import probe, provision
from worker.client import MazeClient, MazeClientError, TopologyMissing
from worker.demo_production import ENV_NAME, run_production
from worker.launcher import ROOT, WorkerDidNotStart, WorkerProcess
from worker.wire import topology


def start_worker(url: str, prefix: str, overrides: Sequence[str]) -> WorkerProcess:
    """maze-worker on CartPole as a child process whose log lines are echoed with a ``[worker]`` tag."""
    return WorkerProcess.start(url, ["env=gym_env", f"env.name={ENV_NAME}", f"broker.prefix={prefix}",
                                     "stats.interval_s=5", *overrides], echo="worker", timeout=None)


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


def serve_only(url: str, prefix: str | None, episodes: int, seconds: float, overrides: Sequence[str]) -> int:
    """The quick demo: one agent worker on CartPole, episodes for ``seconds``, then SIGTERM."""
    prefix = prefix or f"demo-{uuid.uuid4().hex[:8]}"
    print(f"starting maze-worker on {ENV_NAME} with broker.prefix={prefix}", flush=True)
    worker = start_worker(url, prefix, overrides)
    try:
        try:
            worker.wait_healthy(timeout=120)
        except WorkerDidNotStart:
            print("maze-worker did not start (its output is above)", file=sys.stderr)
            return 1
        print(f"playing {episodes} concurrent {ENV_NAME} episodes for {seconds:g} s through worker.client",
              flush=True)
        try:
            with MazeClient(url, prefix=prefix, timeout=30) as client:
                report = run_production(client, episodes, seconds)
        except MazeClientError as err:
            print(f"the production system failed: {err}", file=sys.stderr)
            return 1
    finally:
        print("stopping maze-worker (SIGTERM)", flush=True)
        exit_code = worker.stop()
        with contextlib.suppress(Exception):  # a broker gone by now leaves nothing to tidy
            probe.delete_prefix(url, prefix)
    print("\n".join(report.lines()), flush=True)
    if exit_code != 0:
        print(f"maze-worker exited with {exit_code}, expected 0", file=sys.stderr)
        return 1
    print("maze-worker stopped cleanly (exit code 0)", flush=True)
    return 0


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m worker.demo", description=__doc__.splitlines()[0],
                                     epilog="Arguments after -- go to the workers as config overrides.")
    parser.add_argument("--episodes", type=int, default=16, help="concurrent episodes (default 16)")
    parser.add_argument("--seconds", type=float, default=10.0,
                        help="how long to play the first version (--serve-only: to start new episodes)")
    parser.add_argument("--after-episodes", type=int, default=32,
                        help="episodes of the trained version to play after the reload (default 32)")
    parser.add_argument("--output", type=Path, default=None,
                        help="directory for the artifact root and the PNG (default: outputs/demo/<time>)")
    parser.add_argument("--prefix", default=None,
                        help="broker prefix (default: a fresh one; 'maze' with --producer-only)")
    parser.add_argument("--url", default=None, help="broker URL (default: MAZE_AMQP_URL, else a local one, "
                                                    "provisioned if need be)")
    modes = parser.add_mutually_exclusive_group()
    modes.add_argument("--serve-only", action="store_true",
                       help="the quick demo: one agent worker on an untrained policy, no jobs")
    modes.add_argument("--producer-only", action="store_true",
                       help="play against workers already serving --prefix instead of starting any")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args, overrides = parser().parse_known_args(argv)
    overrides = [item for item in overrides if item != "--"]
    with contextlib.ExitStack() as stack:
        try:
            url = stack.enter_context(provision.broker(args.url or os.environ.get(topology.AMQP_URL_ENV)))
        except provision.BrokerUnavailable as err:
            print(err, file=sys.stderr)
            return 1
        print(f"broker: {topology.mask_url(url)}", flush=True)
        if args.producer_only:
            with _client(url, args.prefix or topology.DEFAULT_PREFIX, wait_s=120) as client:
                report = run_production(client, args.episodes, args.seconds)
            print("\n".join(report.lines()), flush=True)
            return 0
        if args.serve_only:
            return serve_only(url, args.prefix, args.episodes, args.seconds, overrides)
        from worker.demo_tour import tour

        output = (args.output or ROOT / "outputs" / "demo" / time.strftime("%Y%m%d-%H%M%S")).resolve()
        return tour(url, args.prefix or f"demo-{uuid.uuid4().hex[:8]}", output, args.episodes, args.seconds,
                    args.after_episodes, overrides)
    return 1  # not reached: the ExitStack swallows no exception


if __name__ == "__main__":
    sys.exit(main())
