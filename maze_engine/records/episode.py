"""The in-memory record of one episode, whatever file it was read from (trajectory files, Minari datasets).

``Trajectory`` holds every stream of an episode stacked over its steps; ``records.trajectory`` reads them
from the ``.npz`` trajectory format, ``records.minari`` from Minari datasets.
"""

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from maze_engine.core.actor_id import ActorID

__all__ = ["Trajectory", "TrajectoryStep"]


def _at(stream: Any, index: int) -> Any:
    if isinstance(stream, dict):
        return {key: _at(value, index) for key, value in stream.items()}
    if isinstance(stream, tuple):
        return tuple(_at(value, index) for value in stream)
    return stream[index]


@dataclass(frozen=True)
class TrajectoryStep:
    """One step of a trajectory: what the policy saw and did, and what the env answered."""

    observation: dict[str, Any]
    action: dict[str, Any]
    reward: Any
    done: bool
    terminated: bool
    truncated: bool
    actor_id: ActorID
    maze_state: Any
    maze_action: Any


@dataclass(frozen=True)
class Trajectory:
    """One recorded episode, every stream stacked over its ``T`` steps (index ``t`` is step ``t``).

    ``observations`` and ``actions`` map each key to an array of shape ``(T, *space_shape)`` (nested dicts and
    tuples for nested spaces). ``observations`` are those the action was taken on, ``maze_states`` the env
    states before each action. Values that are not plain numbers or arrays come back as lists of their JSON
    form. ``complete`` is False when the episode was cut off (a reset or close before ``done``).
    """

    episode_id: str
    observations: dict[str, Any]
    actions: dict[str, Any]
    rewards: np.ndarray
    dones: np.ndarray
    terminated: np.ndarray
    truncated: np.ndarray
    actor_ids: list[ActorID]
    maze_states: Any
    maze_actions: Any
    complete: bool
    metadata: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.dones)

    def step(self, index: int) -> TrajectoryStep:
        """Step ``index`` as a single record (negative indices count from the end)."""
        return TrajectoryStep(observation=_at(self.observations, index), action=_at(self.actions, index),
                              reward=_at(self.rewards, index), done=bool(self.dones[index]),
                              terminated=bool(self.terminated[index]), truncated=bool(self.truncated[index]),
                              actor_id=self.actor_ids[index], maze_state=_at(self.maze_states, index),
                              maze_action=_at(self.maze_actions, index))

    def steps(self) -> Iterator[TrajectoryStep]:
        """Every step in order."""
        return (self.step(index) for index in range(len(self)))
