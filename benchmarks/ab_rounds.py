"""Two worker prefixes measured against each other in one run: alternating loadgen rounds, paired ratios.

Rounds alternate their order (A-B, then B-A), so a shared machine slowing down hits both alike; each round's
two runs are neighbours in time, and the median of their ratios is what drift spares. ``published_pair``
starts the two workers of the release benchmarks: one published policy, served with and without a change.
"""

import argparse
import statistics
import tempfile
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from worker_batch_step import save_untrained_policy
from worker_roundtrip import URL, _loadgen

from worker.broker.probe import delete_prefix
from worker.launcher import WorkerProcess, free_port
from worker.policy_store.store import publish_policy

NAME = "bench"
"""The published policy the release benchmarks serve."""


def ab_parser(description: str) -> argparse.ArgumentParser:
    """The options every A/B round-trip benchmark takes: ``--seconds``, ``--rounds``, ``--episodes``."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--seconds", type=float, default=8.0, help="measured seconds per loadgen run")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--episodes", type=int, default=64)
    return parser


def ab_prefixes(changed: str) -> tuple[str, str]:
    """Fresh broker prefixes of the baseline worker and of the ``changed`` one."""
    tag = uuid.uuid4().hex[:8]
    return f"bench-plain-{tag}", f"bench-{changed}-{tag}"


class ABRuns:
    """The loadgen results of prefixes ``a`` and ``b`` (``a`` is the baseline)."""

    def __init__(self, a: str, b: str) -> None:
        self.a, self.b = a, b
        self.runs: dict[str, list[dict[str, Any]]] = {a: [], b: []}

    def measure(self, rounds: int, episodes: int, seconds: float) -> None:
        """``rounds`` rounds of one loadgen run per prefix, in alternating order."""
        for number in range(rounds):
            for prefix in ((self.a, self.b) if number % 2 == 0 else (self.b, self.a)):
                self.runs[prefix].append(_loadgen(episodes, seconds, "{episode}", f"{prefix}.states"))

    def median(self, prefix: str, key: str) -> float:
        return float(statistics.median(run[key] for run in self.runs[prefix]))

    def paired_ratio(self, key: str = "round_trips_per_s") -> float:
        """The median over rounds of b's figure over a's."""
        pairs = zip(self.runs[self.a], self.runs[self.b], strict=True)
        return float(statistics.median(run_b[key] / run_a[key] for run_a, run_b in pairs))

    def all(self, prefix: str, key: str = "round_trips_per_s") -> list[float]:
        return [round(run[key], 1) for run in self.runs[prefix]]

    def errors(self) -> int:
        return sum(run["errors"] + run["stalled"] for runs in self.runs.values() for run in runs)


@dataclass
class PublishedPair:
    """The two workers of ``published_pair`` by prefix, their metrics ports, and (once stopped) exit codes."""

    workers: dict[str, WorkerProcess]
    ports: dict[str, int]
    exits: dict[str, int | None] = field(default_factory=dict)


@contextmanager
def published_pair(plain: str, changed: str, change: Callable[[Path], object],
                   prepare: Callable[[Path], object] | None = None) -> Iterator[PublishedPair]:
    """Two ``maze-worker`` processes (CartPole, 16 shards, metrics on) serving ``policy=published_policy``
    NAME from artifact roots of their own, each with versions 1 and 2 (untrained 64-64 MLPs) published and
    ``prepare(root)`` applied; ``change(root)`` alters the release state of ``changed``'s root before its
    worker starts. Both are healthy when this yields; afterwards they are stopped, their prefixes deleted."""
    ports = {plain: free_port(), changed: free_port()}
    with tempfile.TemporaryDirectory() as directory:
        roots = {plain: Path(directory) / "plain", changed: Path(directory) / "changed"}
        for number in (1, 2):
            run = save_untrained_policy(Path(directory) / f"run-{number}")
            for root in roots.values():
                publish_policy(root, NAME, run)
        for root in roots.values():
            if prepare is not None:
                prepare(root)
        change(roots[changed])
        pair = PublishedPair({prefix: WorkerProcess.start(URL, [
            "env=gym_env", "env.name=CartPole-v1", "policy=published_policy", f"policy.name={NAME}",
            f"artifact_root={roots[prefix]}", "broker.shards=16", f"broker.prefix={prefix}",
            f"metrics.port={ports[prefix]}"], timeout=None) for prefix in (plain, changed)}, ports)
        try:
            for worker in pair.workers.values():
                worker.wait_healthy(90)
            yield pair
        finally:
            pair.exits = {prefix: worker.stop() for prefix, worker in pair.workers.items()}
            for prefix in (plain, changed):
                delete_prefix(URL, prefix)
