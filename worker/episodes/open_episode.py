"""One open episode of the table: its deployment, its place in the sequence, its replies and history."""

from __future__ import annotations

import logging
from typing import Any

from maze_engine.deployment.agent_deployment import AgentDeployment
from worker.episodes.handoff import History
from worker.episodes.sources import DeploymentSource, version_of

logger = logging.getLogger(__name__)


class OpenEpisode:
    """One open episode: its deployment, the last seq stepped and the replies kept for redeliveries."""

    __slots__ = ("episode", "deployment", "last_seq", "replies", "last_seen", "history", "history_bytes",
                 "resumed_seq", "source", "policy_version", "proposed", "experience", "shadow")

    def __init__(self, episode: str, deployment: AgentDeployment, now: float,
                 source: DeploymentSource) -> None:
        self.episode = episode
        self.deployment = deployment
        self.source = source
        """The DeploymentSource the deployment came from: its policy acts for the whole episode."""
        self.policy_version = version_of(source)
        self.last_seq = -1
        self.replies: dict[int, bytes] = {}
        self.last_seen = now
        self.history: History | None = History()
        """Every step so far (inputs and policy actions): what a new owner replays; None once it outgrew
        ``max_history_bytes`` (the episode then stays here until it ends)."""
        self.history_bytes = 0
        self.resumed_seq = -1
        """The seq this episode was resumed at after a lost state (its reply says so), else -1."""
        self.proposed: Any = None
        """The maze_action of the last reply: what a reported ``applied_action`` is compared with."""
        self.experience: Any = None
        """The episode's recorded experience (``worker/episodes/recording.py``), None when not recorded."""
        self.shadow: Any = None
        """The shadow candidate acting beside it (``worker/episodes/shadow_candidate.py``), else None."""

    def drop_history(self, limit: int) -> None:
        """The history outgrew its budget (``limit`` bytes): memory stays bounded, and the episode can no
        longer move."""
        self.history = None
        logger.warning("episode %s: its history passed episodes.max_history_bytes (%d); it can no longer be "
                       "handed to another worker and stays here until it ends", self.episode, limit)
