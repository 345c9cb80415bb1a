"""Stepping a batch of states: rounds of one state per episode, one policy call per source and actor."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from maze_engine.deployment.agent_deployment import AgentDeployment
from maze_engine.deployment.batch import act_batch
from worker.episodes.sources import DeploymentSource
from worker.wire.protocol import StateMessage

logger = logging.getLogger(__name__)

Item = tuple[AgentDeployment, tuple[Any, ...]]
"""A deployment and the positional arguments of its ``observe`` for one state."""


def rounds(messages: Sequence[StateMessage]) -> list[list[int]]:
    """Indices grouped into rounds with at most one state per episode, each episode's states in seq order."""
    count = len(messages)
    episodes = [message.episode for message in messages]
    if len(set(episodes)) == count:
        return [list(range(count))]
    by_episode: dict[str, list[int]] = {}
    for index, episode in enumerate(episodes):
        by_episode.setdefault(episode, []).append(index)
    grouped: list[list[int]] = []
    for indices in by_episode.values():
        indices.sort(key=lambda index: messages[index].seq)
        for position, index in enumerate(indices):
            if position == len(grouped):
                grouped.append([])
            grouped[position].append(index)
    for round_indices in grouped:
        round_indices.sort()
    return grouped


def act_one_source(items: list[Item], source: DeploymentSource, deterministic: bool,
                   actions: list[list[Any]], observations: list[list[Any]] | None = None,
                   log_probs: list[list[Any]] | None = None) -> list[Any]:
    """``act_batch`` with ``source``'s policy: a result (action or exception) per item; ``actions`` gets the
    policy actions each item's stack was resumed with, ``observations`` and ``log_probs`` (when given, for
    recorded experience) what they were computed for and their log-probabilities."""
    try:
        return act_batch(items, source.policy, deterministic, actions, observations, log_probs)
    except Exception as err:  # noqa: BLE001 - act_batch returns per-item errors; this is a last resort
        logger.exception("stepping a batch of %d states failed", len(items))
        for out in (actions, observations, log_probs):
            if out is not None:
                out[:] = [[] for _ in items]
        return [err] * len(items)


def act_by_source(items: list[Item], sources: list[DeploymentSource], deterministic: bool,
                  record: bool = False) -> tuple[list[Any], list[list[Any]], list[list[Any]] | None,
                                                 list[list[Any]] | None]:
    """``act_one_source`` per source (policy version): results, actions and (with ``record``) observations
    and log-probabilities back in the order of ``items``."""
    groups: dict[int, list[int]] = {}
    for position, source in enumerate(sources):
        groups.setdefault(id(source), []).append(position)
    results: list[Any] = [None] * len(items)
    actions: list[list[Any]] = [[] for _ in items]
    observations: list[list[Any]] | None = [[] for _ in items] if record else None
    log_probs: list[list[Any]] | None = [[] for _ in items] if record else None
    for positions in groups.values():
        group_actions: list[list[Any]] = []
        group_observations: list[list[Any]] | None = [] if record else None
        group_log_probs: list[list[Any]] | None = [] if record else None
        group = [items[position] for position in positions]
        group_results = act_one_source(group, sources[positions[0]], deterministic, group_actions,
                                       group_observations, group_log_probs)
        for number, position in enumerate(positions):
            results[position] = group_results[number]
            actions[position] = group_actions[number]
            if observations is not None and log_probs is not None and group_observations is not None \
                    and group_log_probs is not None:
                observations[position] = group_observations[number]
                log_probs[position] = group_log_probs[number]
    return results, actions, observations, log_probs
