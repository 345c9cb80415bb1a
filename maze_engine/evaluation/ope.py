"""Off-policy estimates of a candidate policy's expected return from logged episodes, with their intervals.

With ``w[i, t]`` the cumulative importance weight of episode ``i`` after step ``t`` (``weights.py``; frozen
after the episode ends, where its rewards are 0) and ``gamma`` the discount:

- ``wis``, per-decision weighted importance sampling (Precup et al. 2000; CWPDIS in Thomas 2015)::

      V = sum_t gamma^t * sum_i w[i, t] r[i, t] / sum_i w[i, t]

- ``dr``, weighted doubly robust (Thomas and Brunskill 2016), with ``Q`` and ``V`` from fitted Q
  evaluation (``fqe.py``) and ``w[i, -1] = 1``::

      V = sum_t gamma^t * ( sum_i w[i, t] (r[i, t] - Q[i, t]) / sum_i w[i, t]
                           + sum_i w[i, t-1] V[i, t] / sum_i w[i, t-1] )

  It is ``wis`` with the fitted values as a control variate: as good as either the weights or the
  Q-function, and of lower variance where the Q-function is good.

Each estimate comes with a percentile bootstrap interval over episodes (the Q-functions are fitted once,
cross-fitted on folds of the episodes, so the interval of ``dr`` leaves out the variance of fitting them)
and the effective sample size of the episodes' final weights, ``(sum w)^2 / sum w^2``: near the number of
episodes when the candidate acts like the behaviour policy, near 1 when a handful of episodes decide the
estimate (then the interval is not to be trusted either).
"""

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from maze_engine.core.errors import ConfigError
from maze_engine.evaluation.candidate import candidate_of
from maze_engine.evaluation.data import LoggedEpisodes, episode_returns, padded
from maze_engine.evaluation.fqe import FQEConfig, QEstimates, fit_q_function
from maze_engine.evaluation.weights import effective_sample_size, log_ratios, weight_matrix

METHODS = ("wis", "dr")
BOOTSTRAP_CHUNK = 64
"""Bootstrap replicates computed together (each holds an ``(episodes,)`` row of counts)."""


@dataclass(frozen=True)
class Estimate:
    """One estimator's estimate of the candidate's expected (discounted) return."""

    method: str
    """``wis`` or ``dr``."""
    value: float
    low: float
    high: float
    """The bootstrap interval at ``level``."""
    ess: float
    """Effective sample size of the episodes' final importance weights."""

    def as_dict(self) -> dict[str, Any]:
        return {"method": self.method, "value": self.value, "low": self.low, "high": self.high,
                "ess": self.ess}


@dataclass(frozen=True)
class OffPolicyEvaluation:
    """The estimates of one candidate on one data set, and what they were computed with."""

    estimates: dict[str, Estimate]
    gamma: float
    level: float
    bootstrap: int
    episodes: int
    steps: int
    behaviour_return: float
    """Mean discounted return of the logged episodes: the behaviour policy's own (on-policy) value."""
    floored_steps: int = 0
    """Steps whose candidate probability ``epsilon`` raised (0 without ``epsilon``)."""

    def as_dict(self) -> dict[str, Any]:
        return {"estimates": {name: estimate.as_dict() for name, estimate in self.estimates.items()},
                "gamma": self.gamma, "level": self.level, "bootstrap": self.bootstrap,
                "episodes": self.episodes, "steps": self.steps, "behaviour_return": self.behaviour_return,
                "floored_steps": self.floored_steps}


def _ratio(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    # A resample can miss every episode carrying weight at some step; that step then adds nothing.
    safe = np.where(denominator > 0, denominator, 1.0)
    return np.where(denominator > 0, numerator / safe, 0.0)


class EpisodeStatistic:
    """An estimator as a function of how often each episode is counted: ones for the estimate itself,
    multinomial counts for a bootstrap replicate. Holds the ``(episodes, steps)`` matrices it sums."""

    def __init__(self, pairs: Sequence[tuple[np.ndarray, np.ndarray]], discounts: np.ndarray) -> None:
        self.pairs = pairs
        """(numerator, denominator) matrices: the estimate is sum_t discount_t sum_pairs num / den."""
        self.discounts = discounts

    def __call__(self, counts: np.ndarray) -> np.ndarray:
        total = np.zeros((counts.shape[0], len(self.discounts)))
        for numerator, denominator in self.pairs:
            total += _ratio(counts @ numerator, counts @ denominator)
        return total @ self.discounts


def weighted_importance_sampling(weights: np.ndarray, rewards: np.ndarray, gamma: float) -> EpisodeStatistic:
    """The per-decision WIS statistic over ``(episodes, steps)`` weights and rewards (module docstring)."""
    discounts = gamma ** np.arange(weights.shape[1], dtype=np.float64)
    return EpisodeStatistic([(weights * rewards, weights)], discounts)


def doubly_robust(weights: np.ndarray, rewards: np.ndarray, q_taken: np.ndarray, state_values: np.ndarray,
                  gamma: float) -> EpisodeStatistic:
    """The weighted doubly robust statistic (module docstring); all arrays ``(episodes, steps)``, zero past
    each episode's end."""
    before = np.concatenate([np.ones((weights.shape[0], 1)), weights[:, :-1]], axis=1)
    return EpisodeStatistic([(weights * (rewards - q_taken), weights), (before * state_values, before)],
                      gamma ** np.arange(weights.shape[1], dtype=np.float64))


def bootstrap_interval(statistic: Callable[[np.ndarray], np.ndarray], episodes: int, replicates: int,
                       level: float, seed: int | None) -> tuple[float, float]:
    """Percentile interval of ``statistic`` over ``replicates`` resamples of the episodes."""
    rng = np.random.default_rng(seed)
    values = []
    for start in range(0, replicates, BOOTSTRAP_CHUNK):
        size = min(BOOTSTRAP_CHUNK, replicates - start)
        counts = rng.multinomial(episodes, np.full(episodes, 1.0 / episodes), size=size).astype(np.float64)
        values.append(statistic(counts))
    low, high = np.quantile(np.concatenate(values), [(1.0 - level) / 2.0, (1.0 + level) / 2.0])
    return float(low), float(high)


def _check(gamma: float, bootstrap: int, level: float, methods: Sequence[str]) -> None:
    if not 0.0 <= gamma <= 1.0:
        raise ConfigError(f"gamma: expected a discount in [0, 1], got {gamma}")
    if bootstrap < 2:
        raise ConfigError(f"bootstrap: expected at least 2 resamples, got {bootstrap}")
    if not 0.0 < level < 1.0:
        raise ConfigError(f"level: expected a coverage in (0, 1), got {level}")
    unknown = [method for method in methods if method not in METHODS]
    if unknown or not methods:
        raise ConfigError(f"methods: expected some of {', '.join(METHODS)}, got {list(methods)}")


def evaluate_off_policy(data: LoggedEpisodes, policy: Any, gamma: float = 1.0,
                        methods: Sequence[str] = METHODS,
                        bootstrap: int = 500, seed: int | None = 0, level: float = 0.95,
                        epsilon: float | None = None, action_space: Any = None,
                        fqe: FQEConfig = FQEConfig(), q_estimates: QEstimates | None = None
                        ) -> OffPolicyEvaluation:
    """Estimate ``policy``'s expected return on ``data`` with ``methods`` (``wis``, ``dr``).

    ``policy``: a TorchPolicy, a RandomPolicy or any object with ``log_probs(observations, actions)``
    (``candidate.py``). ``gamma`` discounts rewards (1.0: the plain episodic return). ``bootstrap``
    resamples of the episodes, drawn with ``seed``, give the interval at ``level``. ``epsilon`` floors the
    candidate's probability of logged actions (see ``weights.log_ratios``; without it, actions the
    candidate never takes are refused). ``dr`` fits a Q-function with ``fqe`` over ``action_space`` (default:
    the policy's ``action_spaces_dict``' first), unless ``q_estimates`` brings one's values.
    """
    _check(gamma, bootstrap, level, methods)
    candidate = candidate_of(policy)
    target_log_probs = candidate.log_probs(data.observations, data.actions)
    ratios = log_ratios(data, target_log_probs, epsilon)
    floored = 0 if epsilon is None else int((target_log_probs < np.log(epsilon)).sum())
    weights = weight_matrix(data, ratios)
    rewards = padded(data, data.rewards)
    ess = effective_sample_size(weights[:, -1])
    statistics: dict[str, EpisodeStatistic] = {}
    if "wis" in methods:
        statistics["wis"] = weighted_importance_sampling(weights, rewards, gamma)
    if "dr" in methods:
        if q_estimates is None:
            q_estimates = fit_q_function(data, candidate, _action_space(policy, action_space), gamma, fqe)
        statistics["dr"] = doubly_robust(weights, rewards, padded(data, q_estimates.taken),
                                         padded(data, q_estimates.state_values), gamma)
    estimates = {}
    for offset, (name, statistic) in enumerate(statistics.items()):
        value = float(statistic(np.ones((1, data.n_episodes)))[0])
        low, high = bootstrap_interval(statistic, data.n_episodes, bootstrap, level,
                                       None if seed is None else seed + offset)
        estimates[name] = Estimate(name, value, low, high, ess)
    return OffPolicyEvaluation(estimates, gamma, level, bootstrap, data.n_episodes, data.n_steps,
                               float(episode_returns(data, gamma).mean()), floored)


def _action_space(policy: Any, action_space: Any) -> Any:
    if action_space is not None:
        return action_space
    spaces_dict = getattr(policy, "action_spaces_dict", None)
    if not spaces_dict:
        raise ConfigError("action_space: the doubly robust estimate enumerates the candidate's actions; pass "
                          "action_space (the policy's Dict action space) for a policy without "
                          "action_spaces_dict")
    return next(iter(spaces_dict.values()))
