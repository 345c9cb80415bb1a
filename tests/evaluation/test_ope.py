"""Off-policy estimators against hand-computed numbers (a bandit, a two-step MDP), their refusals, and the
bootstrap interval's coverage of a known truth."""

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import pytest
from gymnasium import spaces

from maze_engine.evaluation import (
    FQEConfig,
    LoggedDataError,
    LoggedEpisodes,
    MissingPropensitiesError,
    QEstimates,
    UnsupportedActionsError,
    evaluate_off_policy,
)
from maze_engine.evaluation.data import episode_returns

ACTIONS = spaces.Dict({"action": spaces.Discrete(2)})


class TableCandidate:
    """pi_e(a | s) from a table indexed by the integer observation ``s`` (column 0 of ``observation``)."""

    action_spaces_dict = {0: ACTIONS}

    def __init__(self, table: Any) -> None:
        self.table = np.asarray(table, dtype=np.float64)

    def log_probs(self, observations: Mapping[str, Any], actions: Mapping[str, Any]) -> np.ndarray:
        states = np.asarray(observations["observation"])[:, 0].astype(int)
        with np.errstate(divide="ignore"):
            return np.log(self.table[states, np.asarray(actions["action"])])


def logged(states: list[int], actions: list[int], rewards: list[float], lengths: list[int],
           behaviour: float | list[float] = 0.5) -> LoggedEpisodes:
    log_probs = np.log(np.broadcast_to(np.asarray(behaviour, dtype=np.float64), (len(actions),)))
    return LoggedEpisodes(observations={"observation": np.asarray(states, dtype=np.float32)[:, None]},
                          actions={"action": np.asarray(actions)}, behaviour_log_probs=log_probs,
                          rewards=np.asarray(rewards, dtype=np.float64), lengths=np.asarray(lengths))


def test_bandit_wis_and_ess_match_the_hand_computed_numbers() -> None:
    # Uniform behaviour; pi_e(0) = 0.8: weights 1.6, 1.6, 0.4, 0.4.
    data = logged([0, 0, 0, 0], [0, 0, 1, 1], [1.0, 0.0, 2.0, 2.0], [1, 1, 1, 1])
    result = evaluate_off_policy(data, TableCandidate([[0.8, 0.2]]), methods=("wis",), bootstrap=50)
    assert result.estimates["wis"].value == pytest.approx((1.6 * 1 + 0.4 * 2 + 0.4 * 2) / 4.0)
    assert result.estimates["wis"].ess == pytest.approx(16.0 / (2 * 1.6**2 + 2 * 0.4**2))
    assert result.behaviour_return == pytest.approx(1.25)
    assert result.estimates["wis"].low <= result.estimates["wis"].value <= result.estimates["wis"].high


def test_bandit_dr_with_the_true_q_is_the_true_value_and_with_zero_q_is_wis() -> None:
    data = logged([0, 0, 0, 0], [0, 0, 1, 1], [1.0, 0.0, 2.0, 2.0], [1, 1, 1, 1])
    candidate = TableCandidate([[0.8, 0.2]])
    true_q = QEstimates(taken=np.array([0.5, 0.5, 2.0, 2.0]), state_values=np.full(4, 0.8 * 0.5 + 0.2 * 2))
    exact = evaluate_off_policy(data, candidate, methods=("dr",), bootstrap=20, q_estimates=true_q)
    assert exact.estimates["dr"].value == pytest.approx(0.8)
    zero_q = QEstimates(np.zeros(4), np.zeros(4))
    zero = evaluate_off_policy(data, candidate, bootstrap=20, q_estimates=zero_q)
    assert zero.estimates["dr"].value == pytest.approx(zero.estimates["wis"].value)


# Two-step MDP: s0 --a0--> reward a0, s1 = 1 + a0 --a1--> reward 2 if a1 == a0 else 0; the episode ends.
# pi_e: P(a0 = 1) = 0.7; at s1 it repeats a0 with probability 0.9. True value: 0.7 + gamma * 1.8.
TWO_STEP = [[0.3, 0.7], [0.9, 0.1], [0.1, 0.9]]


def two_step(first: list[int], second: list[int]) -> LoggedEpisodes:
    states = [state for a0 in first for state in (0, 1 + a0)]
    actions = [action for pair in zip(first, second, strict=True) for action in pair]
    rewards = [reward for a0, a1 in zip(first, second, strict=True) for reward in (a0, 2.0 * (a1 == a0))]
    return logged(states, actions, rewards, [2] * len(first))


@pytest.mark.parametrize("gamma", [1.0, 0.5])
def test_two_step_wis_on_balanced_data_is_the_true_value(gamma: float) -> None:
    # Each trajectory once: weights 0.6/1.4 at step 0 and 1.08, 0.12, 0.28, 2.52 after step 1.
    data = two_step([0, 0, 1, 1], [0, 1, 0, 1])
    result = evaluate_off_policy(data, TableCandidate(TWO_STEP), gamma=gamma, methods=("wis",), bootstrap=20)
    assert result.estimates["wis"].value == pytest.approx(0.7 + gamma * 1.8)
    assert result.estimates["wis"].ess == pytest.approx(16.0 / (1.08**2 + 0.12**2 + 0.28**2 + 2.52**2))


def test_episodes_of_different_lengths_keep_their_last_weight() -> None:
    # Constant pi_e(1) = 0.75 under uniform behaviour: ratios 0.5 (action 0) and 1.5 (action 1).
    # Episode A (1 step): a=0, r=1, weight 0.5 from then on. Episode B: a=1, r=0; a=1, r=3: 1.5, 2.25.
    data = logged([0, 0, 0], [0, 1, 1], [1.0, 0.0, 3.0], [1, 2])
    result = evaluate_off_policy(data, TableCandidate([[0.25, 0.75]]), methods=("wis",), bootstrap=20)
    assert result.estimates["wis"].value == pytest.approx(0.5 / 2.0 + 2.25 * 3.0 / 2.75)
    assert result.estimates["wis"].ess == pytest.approx(2.75**2 / (0.5**2 + 2.25**2))


def test_two_step_dr_with_the_exact_q_telescopes_to_the_true_value_on_any_sample() -> None:
    rng = np.random.default_rng(3)
    first, second = rng.integers(0, 2, 40).tolist(), rng.integers(0, 2, 40).tolist()
    data = two_step(first, second)
    states = np.asarray(data.observations["observation"])[:, 0].astype(int)
    taken_actions = np.asarray(data.actions["action"])
    q_table = np.array([[1.8, 2.8], [2.0, 0.0], [0.0, 2.0]])  # Q(s0, a0) = a0 + 1.8; Q(s1, a1)
    q = QEstimates(q_table[states, taken_actions], (np.asarray(TWO_STEP) * q_table).sum(axis=1)[states])
    result = evaluate_off_policy(data, TableCandidate(TWO_STEP), bootstrap=50, q_estimates=q)
    assert result.estimates["dr"].value == pytest.approx(2.5)
    assert result.estimates["wis"].value != pytest.approx(2.5)


def test_fitted_q_evaluation_gets_the_two_step_value() -> None:
    rng = np.random.default_rng(0)
    data = two_step(rng.integers(0, 2, 200).tolist(), rng.integers(0, 2, 200).tolist())
    result = evaluate_off_policy(data, TableCandidate(TWO_STEP), bootstrap=50,
                                 fqe=FQEConfig(hidden_units=(32,), steps=1500, batch_size=64, lr=3e-3,
                                               target_update_every=100))
    assert result.estimates["dr"].value == pytest.approx(2.5, abs=0.1)
    assert result.estimates["dr"].high - result.estimates["dr"].low < (
        result.estimates["wis"].high - result.estimates["wis"].low)


def test_data_without_propensities_is_refused() -> None:
    data = logged([0, 0], [0, 1], [1.0, 0.0], [1, 1])
    bare = LoggedEpisodes(data.observations, data.actions, None, data.rewards, data.lengths, name="dataset x")
    with pytest.raises(MissingPropensitiesError, match="dataset x carries none"):
        evaluate_off_policy(bare, TableCandidate([[0.5, 0.5]]), bootstrap=10)


def test_steps_without_propensities_are_counted_and_refused() -> None:
    data = logged([0] * 6, [0, 1, 0, 1, 0, 1], [1.0] * 6, [2, 2, 2],
                  behaviour=[0.5, math.nan, 0.5, 0.5, math.nan, 0.5])
    with pytest.raises(MissingPropensitiesError,
                       match=r"2 of 6 steps in 2 of 3 episodes \(first: episode 0, step 1\)"):
        evaluate_off_policy(data, TableCandidate([[0.5, 0.5]]), bootstrap=10)


def test_actions_the_candidate_never_takes_are_refused_unless_floored() -> None:
    data = logged([0] * 5, [0, 1, 1, 0, 1], [1.0, 0.0, 0.0, 1.0, 0.0], [2, 2, 1])
    greedy = TableCandidate([[1.0, 0.0]])
    with pytest.raises(UnsupportedActionsError, match=r"probability 0 to the logged action at 3 of 5 steps "
                                                      r"in 3 of 3 episodes \(first: episode 0, step 1\)"):
        evaluate_off_policy(data, greedy, methods=("wis",), bootstrap=10)
    result = evaluate_off_policy(data, greedy, methods=("wis",), bootstrap=10, epsilon=1e-3)
    assert result.floored_steps == 3
    # Floored to 1e-3: weights 2, 0.002, 0.002 after step 0; 0.004, 0.004 (r = 1), 0.002 after step 1.
    assert result.estimates["wis"].value == pytest.approx(2.0 / 2.004 + 0.004 / 0.010)


@pytest.mark.parametrize(("options", "field"), [({"gamma": 1.5}, "gamma"), ({"bootstrap": 1}, "bootstrap"),
                                                ({"level": 1.0}, "level"), ({"methods": ("is",)}, "methods"),
                                                ({"epsilon": 0.0}, "epsilon")])
def test_bad_options_are_refused_naming_them(options: dict[str, Any], field: str) -> None:
    data = logged([0, 0], [0, 1], [1.0, 0.0], [1, 1])
    with pytest.raises(ValueError, match=f"^{field}: "):
        evaluate_off_policy(data, TableCandidate([[0.5, 0.5]]), **options)


def test_arrays_that_do_not_fit_are_refused_naming_them() -> None:
    with pytest.raises(LoggedDataError, match=r"rewards: expected shape \(3,\)"):
        LoggedEpisodes({"observation": np.zeros((3, 1))}, {"action": np.zeros(3)}, np.zeros(3), np.zeros(2),
                       np.array([1, 2]))
    with pytest.raises(LoggedDataError, match=r"actions.action: expected 3 entries"):
        LoggedEpisodes({"observation": np.zeros((3, 1))}, {"action": np.zeros(2)}, np.zeros(3), np.zeros(3),
                       np.array([1, 2]))


def test_the_bootstrap_interval_covers_the_true_value() -> None:
    # Bernoulli rewards: E[r | 0] = 0.2, E[r | 1] = 0.7; behaviour P(1) = 0.3, target P(1) = 0.8.
    truth = 0.2 * 0.2 + 0.8 * 0.7
    rng = np.random.default_rng(11)
    covered = []
    for _ in range(100):
        actions = (rng.random(300) < 0.3).astype(int)
        rewards = (rng.random(300) < np.where(actions == 1, 0.7, 0.2)).astype(float)
        data = logged([0] * 300, actions.tolist(), rewards.tolist(), [1] * 300,
                      behaviour=np.where(actions == 1, 0.3, 0.7).tolist())
        estimate = evaluate_off_policy(data, TableCandidate([[0.2, 0.8]]), methods=("wis",), bootstrap=200,
                                       seed=int(rng.integers(1 << 30))).estimates["wis"]
        covered.append(estimate.low <= truth <= estimate.high)
    assert 0.88 <= np.mean(covered) <= 1.0


def test_episode_returns_are_discounted_per_episode() -> None:
    data = logged([0, 0, 0], [0, 1, 1], [1.0, 2.0, 4.0], [1, 2])
    assert episode_returns(data, 0.5).tolist() == [1.0, 4.0]
