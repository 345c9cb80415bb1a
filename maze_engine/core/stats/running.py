"""Mergeable running statistics (mean, std, min, max, count) in constant memory."""

import math
from dataclasses import dataclass

STAT_NAMES = ("mean", "std", "min", "max", "count")


@dataclass
class RunningStats:
    """Accumulates values one at a time; two instances merge exactly (for parallel rollouts)."""

    count: int = 0
    total: float = 0.0
    total_sq: float = 0.0
    minimum: float = math.inf
    maximum: float = -math.inf

    def add(self, value: float) -> None:
        """Record one value."""
        self.count += 1
        self.total += value
        self.total_sq += value * value
        if value < self.minimum:
            self.minimum = value
        if value > self.maximum:
            self.maximum = value

    def merge(self, other: "RunningStats") -> None:
        """Fold ``other`` into this aggregate."""
        self.count += other.count
        self.total += other.total
        self.total_sq += other.total_sq
        self.minimum = min(self.minimum, other.minimum)
        self.maximum = max(self.maximum, other.maximum)

    def summary(self) -> dict[str, float]:
        """Mean, std (population), min, max and count; NaN for an empty aggregate except count 0."""
        if self.count == 0:
            return {"mean": math.nan, "std": math.nan, "min": math.nan, "max": math.nan, "count": 0}
        mean = self.total / self.count
        variance = max(self.total_sq / self.count - mean * mean, 0.0)
        return {"mean": mean, "std": math.sqrt(variance), "min": self.minimum, "max": self.maximum,
                "count": self.count}
