"""Importance weights of logged episodes for a candidate policy, and the checks that make them meaningful.

The weight of episode ``i`` after step ``t`` is the product of the ratios ``pi_e(a_k|s_k) / pi_b(a_k|s_k)``
over its steps ``k <= t``: how much more (or less) likely the candidate ``pi_e`` was to act as the behaviour
policy ``pi_b`` did. The behaviour's probabilities come from the data (its propensities); without them, or
where the candidate never takes a logged action, the weights say nothing, and we refuse.
"""

import math

import numpy as np

from maze_engine.evaluation.data import LoggedEpisodes, OffPolicyEvaluationError, padded


class MissingPropensitiesError(OffPolicyEvaluationError):
    """The data lacks the behaviour policy's log-probabilities (some steps, or all)."""


class UnsupportedActionsError(OffPolicyEvaluationError):
    """The candidate gives probability 0 to logged actions; weights there are undefined without a floor."""


def _where(data: LoggedEpisodes, mask: np.ndarray) -> str:
    """"k of N steps in m of E episodes (first: episode i, step t)" for the steps in ``mask``."""
    episodes = data.episode_of_step[mask]
    first = int(np.flatnonzero(mask)[0])
    return (f"{int(mask.sum())} of {data.n_steps} steps in {len(np.unique(episodes))} of {data.n_episodes} "
            f"episodes (first: episode {data.episode_of_step[first]}, step {data.step_in_episode[first]})")


def log_ratios(data: LoggedEpisodes, target_log_probs: np.ndarray,
               epsilon: float | None = None) -> np.ndarray:
    """``(steps,)``: ``log pi_e(a|s) - log pi_b(a|s)`` of every logged step.

    Refuses data without behaviour log-probabilities (``MissingPropensitiesError``: how many steps lack one)
    and, unless ``epsilon`` is given, logged actions the candidate gives probability 0
    (``UnsupportedActionsError``: how many). ``epsilon`` floors the candidate's probability of each logged
    action at ``epsilon``, which biases the estimate towards the behaviour's return on those steps; use it
    to see how much rests on them, not to hide them.
    """
    if data.behaviour_log_probs is None:
        raise MissingPropensitiesError(
            f"behaviour log-probabilities: {data.name} carries none, so importance weights cannot be "
            "computed; record the behaviour policy's log-probability of every applied action (maze-worker "
            "records it with experience.record=true; Minari datasets keep it in infos['log_prob'])")
    behaviour = data.behaviour_log_probs
    missing = np.isnan(behaviour)
    if missing.any():
        raise MissingPropensitiesError(
            f"behaviour log-probabilities: {_where(data, missing)} of {data.name} have none (NaN: the "
            "behaviour policy could not say, acted deterministically (argmax actions have no propensity), or "
            "another action than its proposal was applied, as in shadow mode); leave those episodes out, or "
            "evaluate on data a sampling policy logged, whose applied actions were all proposed")
    impossible = np.isneginf(behaviour) | (behaviour == np.inf)
    if impossible.any():
        raise MissingPropensitiesError(
            f"behaviour log-probabilities: {_where(data, impossible)} of {data.name} are infinite (the "
            "behaviour policy could not have taken those actions); the propensities are corrupt")
    target = np.asarray(target_log_probs, dtype=np.float64)
    if target.shape != (data.n_steps,):
        raise OffPolicyEvaluationError(f"candidate log_probs: expected shape ({data.n_steps},), got "
                                       f"{target.shape}")
    if np.isnan(target).any():
        raise OffPolicyEvaluationError(f"candidate log_probs: NaN at {_where(data, np.isnan(target))}; the "
                                       "candidate cannot score those actions")
    if epsilon is not None:
        if not 0.0 < epsilon < 1.0:
            raise OffPolicyEvaluationError(f"epsilon: expected a probability in (0, 1), got {epsilon}")
        target = np.maximum(target, math.log(epsilon))
    else:
        never = np.isneginf(target)
        if never.any():
            raise UnsupportedActionsError(
                f"the candidate gives probability 0 to the logged action at {_where(data, never)} of "
                f"{data.name}: the behaviour policy took actions the candidate never would, so the "
                "importance weights are undefined there (0 would discard those episodes unseen); pass "
                "epsilon (e.g. 1e-3) to floor the candidate's probabilities, knowing it biases the estimate")
    return target - behaviour


def weight_matrix(data: LoggedEpisodes, ratios: np.ndarray) -> np.ndarray:
    """``(episodes, longest)``: cumulative weights ``w[i, t]``, frozen after an episode ends.

    Each column is scaled so that its largest weight is 1: the estimators normalize column by column, so
    the scale cancels, and long products neither overflow nor vanish all at once.
    """
    return normalized_weights(np.cumsum(padded(data, ratios), axis=1))  # zero past the end: weights hold


def normalized_weights(log_weights: np.ndarray) -> np.ndarray:
    """``exp`` of ``(episodes, steps)`` cumulative log-weights, each column scaled so its largest is 1."""
    return np.exp(log_weights - log_weights.max(axis=0, keepdims=True))


def effective_sample_size(weights: np.ndarray) -> float:
    """Kish's effective sample size ``(sum w)^2 / sum w^2`` of a 1-d array of weights."""
    total = float(weights.sum())
    squares = float((weights * weights).sum())
    return total * total / squares if squares > 0 else 0.0
