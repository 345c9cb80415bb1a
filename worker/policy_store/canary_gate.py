"""The automatic canary gate: promote a canary whose mean episode return is not worse than the stable's.

Each agent worker counts the episodes that finish on its own (``CanaryGate.observe``): returns per side, by
Welford's method. Once both sides have ``min_episodes`` finished episodes here, the worker runs a one-sided
Welch t-test (H1: the canary's mean return is lower) and takes the verdict: rollback when the p-value is
below ``1 - confidence``, promote otherwise. The verdict is written to the release state only if its
generation is still the one counted (``releases.decide``), so the first worker to have enough decides for the
whole fleet, and the others drop theirs on the announcement that follows.

>>> gate = CanaryGate(stable=1, canary=2, min_episodes=3, confidence=0.95)
>>> for value in (10.0, 11.0, 12.0):
...     gate.observe(1, value)
...     gate.observe(2, value - 9.0)
>>> gate.verdict().action
'rollback'
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any


@dataclass
class Tally:
    """Count, mean and sum of squared deviations of one side's returns (Welford)."""

    count: int = 0
    mean: float = 0.0
    m2: float = 0.0

    def add(self, value: float) -> None:
        self.count += 1
        delta = value - self.mean
        self.mean += delta / self.count
        self.m2 += delta * (value - self.mean)

    @property
    def variance(self) -> float:
        """The unbiased sample variance (0 for fewer than two values)."""
        return self.m2 / (self.count - 1) if self.count > 1 else 0.0


@dataclass(frozen=True)
class Verdict:
    """``action`` ("promote" or "rollback"), one line why, and the figures behind it (for the event)."""

    action: str
    reason: str
    figures: dict[str, Any]


class CanaryGate:
    """Counts the returns of the stable and the canary version and gives a verdict once both have enough."""

    def __init__(self, stable: int, canary: int, min_episodes: int, confidence: float) -> None:
        self.stable = stable
        self.canary = canary
        self.min_episodes = min_episodes
        self.confidence = confidence
        self.tallies = {stable: Tally(), canary: Tally()}

    def observe(self, version: int | None, episode_return: float) -> None:
        """An episode of ``version`` finished with ``episode_return`` (other versions are not counted)."""
        tally = self.tallies.get(version)  # type: ignore[arg-type]
        if tally is not None and math.isfinite(episode_return):
            tally.add(episode_return)

    def verdict(self) -> Verdict | None:
        """None until both sides have ``min_episodes``; then the verdict of the one-sided Welch test."""
        stable, canary = self.tallies[self.stable], self.tallies[self.canary]
        if min(stable.count, canary.count) < self.min_episodes:
            return None
        t, df, p_value = welch_lower(canary, stable)
        worse = p_value < 1.0 - self.confidence
        figures = {"stable": side(self.stable, stable), "canary": side(self.canary, canary), "t": t, "df": df,
                   "p_value": p_value, "confidence": self.confidence, "min_episodes": self.min_episodes}
        comparison = (f"canary version {self.canary}: mean return {canary.mean:.2f} over {canary.count} "
                      f"episodes, stable version {self.stable}: {stable.mean:.2f} over {stable.count}; "
                      f"one-sided Welch p = {p_value:.3g}")
        if worse:
            return Verdict("rollback", f"{comparison} < {1.0 - self.confidence:.3g}: worse", figures)
        return Verdict("promote", f"{comparison} >= {1.0 - self.confidence:.3g}: not worse", figures)


def side(version: int, tally: Tally) -> dict[str, Any]:
    return {"version": version, "episodes": tally.count, "mean_return": tally.mean,
            "std_return": math.sqrt(tally.variance)}


def welch_lower(a: Tally, b: Tally) -> tuple[float, float, float]:
    """``(t, df, p)`` of Welch's test of H1: mean(a) < mean(b); ``p`` is the lower tail of Student's t.

    With no spread on either side the means decide alone (p 0 when a's is lower, else 1).
    """
    se2 = a.variance / a.count + b.variance / b.count
    difference = a.mean - b.mean
    if se2 <= 0.0:
        return (-math.inf if difference < 0 else math.inf if difference > 0 else 0.0), math.inf, \
            (0.0 if difference < 0 else 1.0)
    t = difference / math.sqrt(se2)
    terms = [(tally.variance / tally.count) ** 2 / (tally.count - 1) for tally in (a, b) if tally.count > 1]
    df = se2 ** 2 / sum(terms) if sum(terms) > 0 else math.inf
    return t, df, student_t_cdf(t, df)


def student_t_cdf(t: float, df: float) -> float:
    """P(T <= t) for Student's t with ``df`` degrees of freedom (the normal distribution for infinite df).

    >>> round(student_t_cdf(-1.812, 10), 3)
    0.05
    """
    if math.isinf(df):
        return 0.5 * math.erfc(-t / math.sqrt(2.0))
    x = df / (df + t * t)
    tail = 0.5 * regularized_beta(x, df / 2.0, 0.5)
    return tail if t < 0 else 1.0 - tail


def regularized_beta(x: float, a: float, b: float) -> float:
    """I_x(a, b), by the continued fraction of Numerical Recipes (``betacf``)."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    front = math.exp(math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x)
                     + b * math.log1p(-x))
    if x < (a + 1.0) / (a + b + 2.0):
        return front * _continued_fraction(x, a, b) / a
    return 1.0 - front * _continued_fraction(1.0 - x, b, a) / b


def _continued_fraction(x: float, a: float, b: float, iterations: int = 300, eps: float = 3e-16) -> float:
    tiny = 1e-300
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1.0)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, iterations + 1):
        m2 = 2 * m
        for numerator in (m * (b - m) * x / ((a + m2 - 1.0) * (a + m2)),
                          -(a + m) * (a + b + m) * x / ((a + m2) * (a + m2 + 1.0))):
            d = 1.0 + numerator * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + numerator / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1.0) < eps:
            break
    return h
