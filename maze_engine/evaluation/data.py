"""Logged episodes for off-policy evaluation: the steps of many episodes, one after another, as arrays.

Each step holds the observation the behaviour policy saw (the policy's observation dict, after the wrapper
stack), the action that was applied, its log-probability under the behaviour policy (the *propensity*) and
the reward that followed. ``LoggedEpisodes`` checks that the arrays fit together; ``padded`` lays a
per-step array out as an ``(episodes, longest episode)`` matrix, which the estimators work on.
"""

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from maze_engine.core.errors import MazeError


class OffPolicyEvaluationError(MazeError, ValueError):
    """Root of the off-policy evaluation errors: data or options an estimate cannot be made from."""


class LoggedDataError(OffPolicyEvaluationError):
    """Logged episodes whose arrays do not fit together; the message names the array."""


def _steps_of(value: Any) -> int:
    """The leading dimension of an array, or of the first array in a (nested) mapping."""
    while isinstance(value, Mapping):
        value = next(iter(value.values()))
    return len(value)


def _check_tree(tree: Mapping[str, Any], steps: int, field: str) -> dict[str, Any]:
    if not isinstance(tree, Mapping) or not tree:
        raise LoggedDataError(f"{field}: expected a dict of arrays keyed like the policy's space, got "
                              f"{type(tree).__name__}")
    checked: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, Mapping):
            checked[key] = _check_tree(value, steps, f"{field}.{key}")
            continue
        array = np.asarray(value)
        if array.ndim == 0 or len(array) != steps:
            raise LoggedDataError(f"{field}.{key}: expected {steps} entries (one per step), got shape "
                                  f"{array.shape}")
        checked[key] = array
    return checked


@dataclass(frozen=True)
class LoggedEpisodes:
    """Steps of ``len(lengths)`` episodes in order: episode 0's steps, then episode 1's, and so on.

    >>> import numpy as np
    >>> data = LoggedEpisodes(observations={"observation": np.zeros((3, 2))},
    ...                       actions={"action": np.array([0, 1, 1])},
    ...                       behaviour_log_probs=np.log([0.5, 0.5, 0.9]), rewards=np.ones(3),
    ...                       lengths=np.array([2, 1]))
    >>> data.n_episodes, data.n_steps, data.step_in_episode.tolist()
    (2, 3, [0, 1, 0])
    """

    observations: dict[str, Any]
    """Per observation key, ``(steps, ...)``: what the behaviour policy acted on."""
    actions: dict[str, Any]
    """Per action key, ``(steps, ...)``: the actions applied (those that earned the rewards)."""
    behaviour_log_probs: np.ndarray | None
    """``(steps,)``: log-probability of each applied action under the behaviour policy; NaN where it is
    unknown; None when the data carries none at all."""
    rewards: np.ndarray
    """``(steps,)``: the reward that followed each action."""
    lengths: np.ndarray
    """Steps of each episode; an episode's return is the discounted sum of its rewards, to its last step."""
    name: str = "the logged episodes"
    """What the data is (a dataset id, a stream), for messages."""

    def __post_init__(self) -> None:
        lengths = np.asarray(self.lengths)
        if lengths.ndim != 1 or len(lengths) == 0 or not np.issubdtype(lengths.dtype, np.integer):
            raise LoggedDataError(f"lengths: expected a non-empty 1-d integer array, got {lengths!r:.80}")
        if (lengths < 1).any():
            raise LoggedDataError(f"lengths: expected every episode to have at least one step, got "
                                  f"{int((lengths < 1).sum())} empty episodes")
        steps = int(lengths.sum())
        object.__setattr__(self, "lengths", lengths.astype(np.int64))
        rewards = np.asarray(self.rewards, dtype=np.float64)
        if rewards.shape != (steps,):
            raise LoggedDataError(f"rewards: expected shape ({steps},) (the lengths sum to {steps}), got "
                                  f"{rewards.shape}")
        if not np.isfinite(rewards).all():
            raise LoggedDataError(f"rewards: {int((~np.isfinite(rewards)).sum())} of {steps} steps of "
                                  f"{self.name} have no finite reward")
        object.__setattr__(self, "rewards", rewards)
        object.__setattr__(self, "observations", _check_tree(self.observations, steps, "observations"))
        object.__setattr__(self, "actions", _check_tree(self.actions, steps, "actions"))
        if self.behaviour_log_probs is not None:
            log_probs = np.asarray(self.behaviour_log_probs, dtype=np.float64)
            if log_probs.shape != (steps,):
                raise LoggedDataError(f"behaviour_log_probs: expected shape ({steps},), got "
                                      f"{log_probs.shape}")
            object.__setattr__(self, "behaviour_log_probs", log_probs)

    @property
    def n_episodes(self) -> int:
        return len(self.lengths)

    @property
    def n_steps(self) -> int:
        return int(self.lengths.sum())

    @property
    def episode_of_step(self) -> np.ndarray:
        """``(steps,)``: the episode each step belongs to."""
        return np.repeat(np.arange(self.n_episodes), self.lengths)

    @property
    def step_in_episode(self) -> np.ndarray:
        """``(steps,)``: the index of each step within its episode (0 at an episode's first step)."""
        starts = np.cumsum(self.lengths) - self.lengths
        return np.arange(self.n_steps) - np.repeat(starts, self.lengths)

    @property
    def last_step(self) -> np.ndarray:
        """``(steps,)``: True at each episode's last step (no bootstrapping past it)."""
        last = np.zeros(self.n_steps, dtype=bool)
        last[np.cumsum(self.lengths) - 1] = True
        return last


def padded(data: LoggedEpisodes, values: np.ndarray, fill: float = 0.0) -> np.ndarray:
    """A per-step array as an ``(episodes, longest)`` matrix; entries past an episode's end are ``fill``."""
    matrix = np.full((data.n_episodes, int(data.lengths.max())), fill, dtype=np.float64)
    matrix[data.episode_of_step, data.step_in_episode] = values
    return matrix


def episode_returns(data: LoggedEpisodes, gamma: float = 1.0) -> np.ndarray:
    """The discounted return of each logged episode (the behaviour policy's own, on-policy)."""
    discounts = gamma ** data.step_in_episode.astype(np.float64)
    return np.bincount(data.episode_of_step, weights=discounts * data.rewards, minlength=data.n_episodes)
