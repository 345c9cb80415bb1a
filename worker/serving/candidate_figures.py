"""The live figures of a shadow candidate on this worker: how often it agrees with the served policy, and what
return it would get, estimated from the episodes served meanwhile (off-policy evaluation).

``worker/episodes/shadow_candidate.py`` reports each batch's decisions and agreements, and each episode that
ended with done with its per-step log importance ratios and rewards. The last ``WINDOW`` such episodes of a
shadow version give the per-decision weighted importance sampling estimate of its return
(``maze_engine.evaluation``, the same estimator as ``maze-worker experience evaluate``), with the effective
sample size of the episodes' weights and the served episodes' own mean return beside it. The estimate needs
stochastic serving (with ``deterministic``, the served log-probabilities are no propensities) and is only as
good as the ESS says: near the episode count when the candidate acts like the served policy, near 1 when a
few episodes decide it. For intervals and the doubly robust estimate, evaluate the recorded experience
stream (``maze-worker experience evaluate --dataset stream:PREFIX``).
"""

from __future__ import annotations

from collections import deque
from typing import NamedTuple

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Gauge

from maze_engine.evaluation.ope import weighted_importance_sampling
from maze_engine.evaluation.weights import effective_sample_size, normalized_weights
from worker.metrics import version_label

WINDOW = 1000
"""Finished episodes per shadow version the estimate is computed over (the latest ones)."""
GAMMA = 1.0
"""The estimate is of the undiscounted episode return, as the served versions' figures are."""
PREFIX = "maze_worker_candidate_"
REFRESH_S = 1.0
"""Longest a finished episode waits to be counted in the gauges (the estimate is recomputed at most this
often, off the reply path)."""


class CandidateFigures:
    """Counters and gauges of shadow candidates in the worker's registry, by ``policy_version``."""

    def __init__(self, registry: CollectorRegistry, window: int = WINDOW) -> None:
        def counter(name: str, documentation: str) -> Counter:
            return Counter(PREFIX + name, documentation, ["policy_version"], registry=registry)

        def gauge(name: str, documentation: str) -> Gauge:
            return Gauge(PREFIX + name, documentation, ["policy_version"], registry=registry)

        self.decisions = counter("decisions", "States the shadow candidate acted on beside the served policy")
        self.agreed = counter("agreed", "Shadow candidate actions equal to the served action")
        self.errors = counter("errors", "Shadow candidate failures (the episode went on without it)")
        self.agreement = gauge("agreement", "Share of shadow candidate actions equal to the served ones")
        self.estimated_return = gauge("estimated_return", "Shadow candidate's return estimated from served "
                                      "episodes (per-decision weighted importance sampling)")
        self.served_return = gauge("served_return", "Mean return of the served episodes the estimate is "
                                   "computed from")
        self.ess = gauge("ess", "Effective sample size of the estimate's episodes")
        self.episodes = gauge("episodes", "Finished episodes the estimate is computed from")
        self.weight_mean = gauge("weight_mean", "Mean importance weight of those episodes (near 1 when the "
                                 "served actions cover the candidate's; near 0: not to be trusted)")
        self.registry = registry
        self.window = window
        self._episodes: dict[str, deque[tuple[np.ndarray, np.ndarray]]] = {}
        self._counts: dict[str, list[int]] = {}
        self._dirty: set[str] = set()
        self._next_refresh = 0.0

    def count(self, policy_version: int | None, decisions: int, agreed: int, errors: int) -> None:
        """One batch's shadow decisions, agreements and failures."""
        version = version_label(policy_version)
        if decisions:
            self.decisions.labels(version).inc(decisions)
            self.agreed.labels(version).inc(agreed)
            counts = self._counts.setdefault(version, [0, 0])
            counts[0] += agreed
            counts[1] += decisions
            self.agreement.labels(version).set(counts[0] / counts[1])
        if errors:
            self.errors.labels(version).inc(errors)

    def finished(self, policy_version: int | None, log_ratios: np.ndarray, rewards: np.ndarray) -> None:
        """An episode ended with done: its log importance ratios and rewards join the window."""
        version = version_label(policy_version)
        self._episodes.setdefault(version, deque(maxlen=self.window)).append((log_ratios, rewards))
        self._dirty.add(version)

    def refresh(self, now: float) -> None:
        """Recompute the estimates of versions with new episodes (at most every ``REFRESH_S``)."""
        if not self._dirty or now < self._next_refresh:
            return
        self._next_refresh = now + REFRESH_S
        for version in self._dirty:
            figures = live_estimate(list(self._episodes[version]))
            self.estimated_return.labels(version).set(figures.estimated_return)
            self.served_return.labels(version).set(figures.served_return)
            self.ess.labels(version).set(figures.ess)
            self.weight_mean.labels(version).set(figures.weight_mean)
            self.episodes.labels(version).set(len(self._episodes[version]))
        self._dirty.clear()


class LiveEstimate(NamedTuple):
    estimated_return: float
    """Per-decision weighted importance sampling estimate of the candidate's return."""
    served_return: float
    """Mean return of the episodes as served."""
    ess: float
    """Effective sample size of the episodes' final weights."""
    weight_mean: float
    """Mean final importance weight: its expectation is 1 where the served policy can take every action the
    candidate takes. Far below 1, the candidate mostly does what the served policy never did, and the
    self-normalized estimate falls back towards the served return."""


def live_estimate(episodes: list[tuple[np.ndarray, np.ndarray]], gamma: float = GAMMA) -> LiveEstimate:
    """The figures of episodes given as (log ratios, rewards) per step."""
    longest = max(len(ratios) for ratios, _ in episodes)
    log_ratios = np.zeros((len(episodes), longest))
    rewards = np.zeros((len(episodes), longest))
    for row, (ratios, episode_rewards) in enumerate(episodes):
        log_ratios[row, :len(ratios)] = ratios  # zero past the end: the weight holds, the rewards are 0
        rewards[row, :len(episode_rewards)] = episode_rewards
    weights = normalized_weights(np.cumsum(log_ratios, axis=1))
    estimate = float(weighted_importance_sampling(weights, rewards, gamma)(np.ones((1, len(episodes))))[0])
    served = float((rewards @ gamma ** np.arange(longest, dtype=np.float64)).mean())
    final = np.exp(np.clip(log_ratios.sum(axis=1), -700.0, 700.0))
    return LiveEstimate(estimate, served, effective_sample_size(weights[:, -1]), float(final.mean()))
