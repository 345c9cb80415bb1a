"""GAE against numbers worked out by hand."""

import numpy as np
import pytest

from maze_engine.training.gae import add_truncation_bootstrap, compute_gae


def _column(values: list[float]) -> np.ndarray:
    return np.asarray(values, dtype=np.float32)[:, None]


def test_single_env_without_episode_end() -> None:
    # gamma 0.5, lambda 1: returns are discounted sums bootstrapped from last value 8.
    # R2 = 1 + 0.5 * 8 = 5, R1 = 2 + 0.5 * 5 = 4.5, R0 = 4 + 0.5 * 4.5 = 6.25
    rewards, values = _column([4, 2, 1]), _column([1, 2, 3])
    advantages, returns = compute_gae(rewards, values, np.zeros((3, 1), bool), np.array([8.0], np.float32),
                                      gamma=0.5, gae_lambda=1.0)
    np.testing.assert_allclose(returns[:, 0], [6.25, 4.5, 5.0])
    np.testing.assert_allclose(advantages[:, 0], [5.25, 2.5, 2.0])


def test_lambda_weights_td_errors() -> None:
    # gamma 0.5, lambda 0.5; deltas: d2 = 1 + 0.5*8 - 3 = 2, d1 = 2 + 0.5*3 - 2 = 1.5, d0 = 4 + 0.5*2 - 1 = 4.
    # A2 = 2, A1 = 1.5 + 0.25 * 2 = 2, A0 = 4 + 0.25 * 2 = 4.5
    rewards, values = _column([4, 2, 1]), _column([1, 2, 3])
    advantages, returns = compute_gae(rewards, values, np.zeros((3, 1), bool), np.array([8.0], np.float32),
                                      gamma=0.5, gae_lambda=0.5)
    np.testing.assert_allclose(advantages[:, 0], [4.5, 2.0, 2.0])
    np.testing.assert_allclose(returns[:, 0], [5.5, 4.0, 5.0])


def test_episode_end_stops_the_flow_back() -> None:
    # The episode ends with step 1: step 1 sees no future, step 2 starts a new episode bootstrapped from 8.
    # gamma 0.5, lambda 1: R2 = 1 + 4 = 5, R1 = 2, R0 = 4 + 0.5 * 2 = 5
    rewards, values = _column([4, 2, 1]), _column([1, 2, 3])
    dones = np.array([[False], [True], [False]])
    advantages, returns = compute_gae(rewards, values, dones, np.array([8.0], np.float32), 0.5, 1.0)
    np.testing.assert_allclose(returns[:, 0], [5.0, 2.0, 5.0])
    np.testing.assert_allclose(advantages[:, 0], [4.0, 0.0, 2.0])


def test_last_step_done_ignores_last_value() -> None:
    rewards, values = _column([1, 1]), _column([0, 0])
    _, returns = compute_gae(rewards, values, np.array([[False], [True]]), np.array([100.0], np.float32),
                             0.9, 1.0)
    np.testing.assert_allclose(returns[:, 0], [1.9, 1.0])


def test_truncation_bootstraps_from_final_value() -> None:
    # Step 1 is truncated with V(final obs) = 6: its target is 2 + 0.5 * 6 = 5, and R0 = 4 + 0.5 * 5 = 6.5.
    rewards, values = _column([4, 2]), _column([1, 2])
    truncated = np.array([[False], [True]])
    final_values = _column([0, 6])
    bootstrapped = add_truncation_bootstrap(rewards, truncated, final_values, gamma=0.5)
    np.testing.assert_allclose(bootstrapped[:, 0], [4.0, 5.0])
    _, returns = compute_gae(bootstrapped, values, truncated, np.array([99.0], np.float32), 0.5, 1.0)
    np.testing.assert_allclose(returns[:, 0], [6.5, 5.0])


def test_envs_are_independent_columns() -> None:
    rewards = np.array([[1, 0], [1, 1]], np.float32)
    values = np.zeros((2, 2), np.float32)
    dones = np.array([[False, True], [False, False]])
    _, returns = compute_gae(rewards, values, dones, np.array([2.0, 4.0], np.float32), 0.5, 1.0)
    # env 0: R1 = 1 + 1 = 2, R0 = 1 + 1 = 2; env 1: R1 = 1 + 2 = 3, R0 = 0 (episode ended)
    np.testing.assert_allclose(returns, [[2.0, 0.0], [2.0, 3.0]])


@pytest.mark.parametrize("bad_last", [np.zeros(3, np.float32), np.zeros((1, 2), np.float32)])
def test_shape_errors_name_the_argument(bad_last: np.ndarray) -> None:
    with pytest.raises(ValueError, match="last_values"):
        compute_gae(np.zeros((4, 2), np.float32), np.zeros((4, 2), np.float32), np.zeros((4, 2), bool),
                    bad_last, 0.9, 0.9)
