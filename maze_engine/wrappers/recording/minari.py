"""MinariRecordingWrapper: writes every episode into a Minari dataset, e.g. for behavioural cloning."""

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from maze_engine.core.env.structured_env import EnvStep, StructuredEnv
from maze_engine.core.errors import ConfigError
from maze_engine.records.minari import MinariWriter, check_dataset_id
from maze_engine.wrappers.wrapper import Wrapper


class MinariRecordingWrapper(Wrapper[StructuredEnv]):
    """Records what the policy saw and did into a Minari dataset whose ``data`` directory is ``path``.

    Per step: the observation dict the action was computed from, the action dict, the reward, terminated
    and truncated; per episode also the observation after its last step (Minari's N + 1 observations). The
    spaces are the policy's (this env's, with the wrappers below). An episode is added when it ends, when a
    reset cuts it short and on ``close`` or ``finish`` (a cut-short episode ends truncated). The dataset is
    created with the first episode and completed by ``finish`` (``close`` calls it). Envs with one actor only.

    >>> import tempfile, minari
    >>> from maze_engine import GymMazeEnv
    >>> path = Path(tempfile.mkdtemp()) / "demo-v0" / "data"
    >>> env = MinariRecordingWrapper.wrap(GymMazeEnv("CartPole-v1"), path=path, dataset_id="demo-v0")
    >>> _ = env.reset()
    >>> for _ in range(3):
    ...     _ = env.step({"action": 1})
    >>> env.close()
    >>> episode = next(minari.MinariDataset(path).iterate_episodes())
    >>> episode.observations["observation"].shape, episode.actions["action"].tolist(), episode.truncations[-1]
    ((4, 4), [1, 1, 1], np.True_)
    """

    def __init__(self, env: StructuredEnv, path: str | os.PathLike[str], dataset_id: str) -> None:
        super().__init__(env)
        counts = env.agent_counts_dict
        if len(counts) != 1 or list(counts.values()) != [1]:
            raise ConfigError(f"record_minari: a Minari dataset has one observation and one action space, so "
                              f"it records envs with one actor; this env has the actors {dict(counts)} "
                              f"(steps: agents)")
        self.step_key = next(iter(counts))
        self.path = Path(path)
        self.dataset_id = check_dataset_id(dataset_id, "record_minari")
        self.writer: MinariWriter | None = None
        self._observations: list[Any] = []
        self._actions: list[Any] = []
        self._rewards: list[float] = []
        self._terminated: list[bool] = []
        self._truncated: list[bool] = []

    def reset(self) -> dict[str, Any]:
        self._add_episode()
        observation = self.env.reset()
        self._observations = [_snapshot(observation)]
        return observation

    def step(self, action: dict[str, Any]) -> EnvStep:
        observation, reward, done, info = self.env.step(action)
        truncated = bool(info.get("truncated", False))
        self._actions.append(_snapshot(action))
        self._rewards.append(float(reward))
        self._terminated.append(bool(info.get("terminated", done and not truncated)))
        self._truncated.append(truncated)
        self._observations.append(_snapshot(observation))
        if done:
            self._add_episode()
        return observation, reward, done, info

    def finish(self) -> None:
        """Add the episode in progress (cut short) and complete the dataset; the env stays open."""
        self._add_episode()
        if self.writer is not None:
            self.writer.close()

    def close(self) -> None:
        self.finish()
        self.env.close()

    def _add_episode(self) -> None:
        """Hand the recorded steps to the writer, if any; the last observation starts the next episode."""
        if self._actions:
            truncated = np.asarray(self._truncated)
            terminated = np.asarray(self._terminated)
            if not (terminated[-1] or truncated[-1]):  # cut short by a reset or close
                truncated[-1] = True
            if self.writer is None:
                gym_env = getattr(self.maze_env, "gym_env", None)
                self.writer = MinariWriter(self.path, self.env.observation_spaces_dict[self.step_key],
                                           self.env.action_spaces_dict[self.step_key], self.dataset_id,
                                           env_spec=getattr(gym_env, "spec", None), field="record_minari")
            self.writer.add_episode(_stacked(self._observations), _stacked(self._actions),
                                    np.asarray(self._rewards), terminated, truncated)
        self._observations = self._observations[-1:]
        self._actions, self._rewards, self._terminated, self._truncated = [], [], [], []


def _snapshot(value: Any) -> Any:
    """A copy of ``value``: envs and policies may reuse the arrays they hand out."""
    if isinstance(value, Mapping):
        return {key: _snapshot(item) for key, item in value.items()}
    if isinstance(value, tuple):
        return tuple(_snapshot(item) for item in value)
    return np.array(value, copy=True)


def _stacked(values: list[Any]) -> Any:
    """Per-step (nested) values stacked into arrays whose first axis is the step."""
    first = values[0]
    if isinstance(first, Mapping):
        return {key: _stacked([value[key] for value in values]) for key in first}
    if isinstance(first, tuple):
        return tuple(_stacked([value[index] for value in values]) for index in range(len(first)))
    return np.stack(values)
