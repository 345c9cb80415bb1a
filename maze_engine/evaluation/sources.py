"""Logged episodes from Minari datasets (``records/minari.py`` finds and opens them).

The convention is ``maze-worker experience export``'s (docs/experience.md): ``actions`` are the applied
actions and ``infos`` hold ``log_prob``, the behaviour policy's log-probability of ``proposed_action``, and
``applied_reported``. That log-probability is the propensity of the applied action only where the proposal
is what was applied: steps where the producer applied another action, and episodes recorded in shadow mode
(the producer's own controller acted), get none (NaN), and the estimators refuse them, saying how many.
Datasets with plain gymnasium spaces are read as ``{"observation": ...}`` and ``{"action": ...}``, as
GymMazeEnv shows them to a policy.
"""

import json
import os
from collections.abc import Mapping
from typing import Any

import numpy as np
from gymnasium import spaces

from maze_engine.evaluation.data import LoggedEpisodes


def _head(value: Any, count: int) -> Any:
    if isinstance(value, Mapping):
        return {key: _head(item, count) for key, item in value.items()}
    return np.asarray(value)[:count]


def _joined(parts: list[Any]) -> Any:
    if isinstance(parts[0], Mapping):
        return {key: _joined([part[key] for part in parts]) for key in parts[0]}
    return np.concatenate(parts)


def _equal(first: Any, second: Any, count: int) -> np.ndarray:
    """Per step, whether two (nested) action stacks hold the same action."""
    if isinstance(first, Mapping):
        same = np.ones(count, dtype=bool)
        for key in first:
            same &= _equal(first[key], second[key], count) if key in second else False
        return same
    a, b = np.asarray(first)[:count], np.asarray(second)[:count]
    return (a == b).reshape(count, -1).all(axis=1)


def _mode(metadata: Mapping[str, Any]) -> str | None:
    """The serving mode an exported episode was recorded in (None: not recorded by maze-worker)."""
    raw = metadata.get("maze")
    if isinstance(raw, str | bytes):
        try:
            return json.loads(raw).get("mode")
        except (ValueError, AttributeError):
            return None
    mode = metadata.get("maze_mode")
    return None if mode is None else str(mode)


def episode_propensities(infos: Mapping[str, Any], applied: Any, count: int, mode: str | None) -> np.ndarray:
    """``(count,)``: the behaviour log-probability of each applied action; NaN where it is unknown."""
    if "log_prob" not in infos or mode == "shadow":
        return np.full(count, np.nan)
    log_probs = np.asarray(infos["log_prob"], dtype=np.float64)[:count].copy()
    if "proposed_action" in infos:
        log_probs[~_equal(applied, infos["proposed_action"], count)] = np.nan
    elif "applied_reported" in infos:
        log_probs[np.asarray(infos["applied_reported"], dtype=bool)[:count]] = np.nan
    return log_probs


def logged_episodes_from_minari(source: str | os.PathLike[str], field: str = "dataset") -> LoggedEpisodes:
    """Every episode of the Minari dataset ``source`` (a path or a local id) as LoggedEpisodes."""
    from maze_engine.records.minari import MinariDatasetError, open_dataset

    dataset = open_dataset(source, field)
    as_observation = _plain(dataset.observation_space, "observation")
    as_action = _plain(dataset.action_space, "action")
    indices = list(range(dataset.storage.total_episodes))
    metadata = list(dataset.storage.get_episode_metadata(indices)) if indices else []
    observations, actions, log_probs, rewards, lengths = [], [], [], [], []
    any_log_probs = False
    for episode, episode_metadata in zip(dataset.iterate_episodes(), metadata, strict=True):
        count = len(episode)
        if count == 0:
            continue
        infos = episode.infos or {}
        any_log_probs |= "log_prob" in infos
        observations.append(as_observation(_head(episode.observations, count)))
        actions.append(as_action(_head(episode.actions, count)))
        log_probs.append(episode_propensities(infos, episode.actions, count, _mode(episode_metadata)))
        rewards.append(np.asarray(episode.rewards, dtype=np.float64))
        lengths.append(count)
    if not lengths:
        raise MinariDatasetError(f"{field}: Minari dataset {dataset.id} ({dataset.storage.data_path}) holds "
                                 "no steps")
    return LoggedEpisodes(observations=_joined(observations), actions=_joined(actions),
                          behaviour_log_probs=np.concatenate(log_probs) if any_log_probs else None,
                          rewards=np.concatenate(rewards), lengths=np.asarray(lengths),
                          name=f"Minari dataset {dataset.id}")


def _plain(space: spaces.Space, key: str) -> Any:
    return (lambda value: value) if isinstance(space, spaces.Dict) else (lambda value: {key: value})
