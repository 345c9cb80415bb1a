"""Generalised advantage estimation (GAE), written once for every on-policy algorithm.

Rollouts are laid out time-major: arrays of shape ``[T, N]`` for ``T`` steps of ``N`` envs. ``dones[t, n]``
is True when the episode of env ``n`` ended with step ``t`` (terminated or truncated); the observation after
that step belongs to a new episode, so nothing flows back across it. An episode cut by a time limit did not
really end: ``add_truncation_bootstrap`` folds the discounted value of its final observation into the last
reward, which is the same as bootstrapping from it.
"""

import numpy as np


def add_truncation_bootstrap(rewards: np.ndarray, truncated: np.ndarray, final_values: np.ndarray,
                             gamma: float) -> np.ndarray:
    """Rewards with ``gamma * V(final observation)`` added where an episode was truncated.

    ``final_values`` has the shape of ``rewards`` and is read only where ``truncated`` is True.
    """
    return np.where(truncated, rewards + gamma * final_values, rewards).astype(rewards.dtype, copy=False)


def compute_gae(rewards: np.ndarray, values: np.ndarray, dones: np.ndarray, last_values: np.ndarray,
                gamma: float, gae_lambda: float) -> tuple[np.ndarray, np.ndarray]:
    """Advantages and value targets (returns) for a ``[T, N]`` rollout.

    ``values[t]`` is V(s_t) for the observation each step was taken in and ``last_values`` is V(s_T) of the
    observation after the last step (ignored where the last step ended an episode). With
    ``delta_t = r_t + gamma * V(s_{t+1}) * (1 - done_t) - V(s_t)`` the advantage is
    ``A_t = delta_t + gamma * lambda * (1 - done_t) * A_{t+1}`` and the return is ``A_t + V(s_t)``.
    """
    if not rewards.shape == values.shape == dones.shape:
        raise ValueError(f"rewards, values and dones must share one [T, N] shape, got {rewards.shape}, "
                         f"{values.shape} and {dones.shape}")
    if last_values.shape != rewards.shape[1:]:
        raise ValueError(f"last_values: expected shape {rewards.shape[1:]}, got {last_values.shape}")
    n_steps = rewards.shape[0]
    advantages = np.zeros_like(rewards, dtype=np.float32)
    not_done = 1.0 - dones.astype(np.float32)
    next_values = last_values.astype(np.float32)
    next_advantage = np.zeros_like(next_values)
    for t in range(n_steps - 1, -1, -1):
        delta = rewards[t] + gamma * next_values * not_done[t] - values[t]
        next_advantage = delta + gamma * gae_lambda * not_done[t] * next_advantage
        advantages[t] = next_advantage
        next_values = values[t]
    returns = advantages + values
    return advantages, returns.astype(np.float32, copy=False)
