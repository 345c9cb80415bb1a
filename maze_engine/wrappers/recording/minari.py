"""MinariRecordingWrapper: writes every episode into a Minari dataset, for behavioural cloning or off-policy
evaluation."""

import math
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
    spaces are the policy's (this env's, with the wrappers below). ``infos["log_prob"]`` holds the acting
    policy's log-probability of each action, passed as ``step(action, log_prob=...)`` (NaN where none is),
    with one NaN more at the end: the convention of ``maze-worker experience export``, so off-policy
    evaluation reads both (``evaluation.sources``). An episode is added when it ends, when a reset cuts it
    short and on ``close`` or ``finish`` (a cut-short episode ends truncated). The dataset is created with
    the first episode and completed, with ``metadata`` (a description, say), by ``finish`` (``close`` calls
    it). Envs with one actor only.

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
    >>> episode.infos["log_prob"].shape  # no log-probabilities given: all NaN
    (4,)
    """

    def __init__(self, env: StructuredEnv, path: str | os.PathLike[str], dataset_id: str,
                 metadata: Mapping[str, Any] | None = None) -> None:
        super().__init__(env)
        counts = env.agent_counts_dict
        if len(counts) != 1 or list(counts.values()) != [1]:
            raise ConfigError(f"record_minari: a Minari dataset has one observation and one action space, so "
                              f"it records envs with one actor; this env has the actors {dict(counts)} "
                              f"(steps: agents)")
        self.step_key = next(iter(counts))
        self.path = Path(path)
        self.dataset_id = check_dataset_id(dataset_id, "record_minari")
        self.metadata = dict(metadata or {})
        self.writer: MinariWriter | None = None
        self._observations: list[Any] = []
        self._actions: list[Any] = []
        self._rewards: list[float] = []
        self._terminated: list[bool] = []
        self._truncated: list[bool] = []
        self._log_probs: list[float] = []

    def reset(self) -> dict[str, Any]:
        self._add_episode()
        observation = self.env.reset()
        self._observations = [_snapshot(observation)]
        return observation

    def step(self, action: dict[str, Any], log_prob: float | None = None) -> EnvStep:
        """Step the env and record the step; ``log_prob``: the acting policy's log-probability of ``action``
        (its propensity, for off-policy evaluation), None where unknown. Only a caller that steps this
        wrapper itself can pass it (the rollout runners keep it outermost)."""
        observation, reward, done, info = self.env.step(action)
        truncated = bool(info.get("truncated", False))
        self._log_probs.append(math.nan if log_prob is None else float(log_prob))
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
                                           env_spec=getattr(gym_env, "spec", None), metadata=self.metadata,
                                           field="record_minari")
            # Minari's infos go with the N + 1 observations: the last one has no action, so no log-prob.
            log_probs = np.asarray([*self._log_probs, math.nan], dtype=np.float64)
            self.writer.add_episode(_stacked(self._observations), _stacked(self._actions),
                                    np.asarray(self._rewards), terminated, truncated,
                                    infos={"log_prob": log_probs})
        self._observations = self._observations[-1:]
        self._actions, self._rewards, self._terminated, self._truncated = [], [], [], []
        self._log_probs = []


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
