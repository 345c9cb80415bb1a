"""Two worker prefixes measured against each other in one run: alternating loadgen rounds, paired ratios.

Rounds alternate their order (A-B, then B-A), so a shared machine slowing down hits both alike; each round's
two runs are neighbours in time, and the median of their ratios is what drift spares.
"""

import statistics
from typing import Any

from worker_roundtrip import _loadgen


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
