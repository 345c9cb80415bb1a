"""What the episode table reports besides replies: applied actions (checked, compared) and experience.

A state may report ``applied_action``, the action the producer applied after the previous state. The table
checks it against the action space before stepping (``bad_message`` naming it otherwise), compares it with
the worker's previous reply (the agreement of shadow mode, ``on_applied``) and hands it, with the policy's
observation, proposal and log-probability, to the episode's experience when the episode is recorded.
The recorder lives in ``worker/experience/``; the table knows it only by the protocols below.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, NamedTuple, Protocol

from maze_engine.core.actor_id import DEFAULT_ACTOR_ID, ActorID
from maze_engine.deployment.agent_deployment import AgentDeployment, PolicyRequest
from worker.episodes.handoff import EpisodeRecord
from worker.episodes.open_episode import OpenEpisode
from worker.episodes.spaces import ServedSpaces, same_action
from worker.wire.protocol import StateMessage
from worker.wire.replies import decode_reply


class EpisodeExperience(Protocol):
    """The recorded steps of one episode (``worker.experience.buffer.RunBuffer``)."""

    def act(self, seq: int, observation: Any, proposed: Any, log_prob: float | None, reward: float | None,
            applied: Any, now: float, shadow: tuple[int | None, Any, float | None] | None = None) -> None:
        """The policy acted on state ``seq``; ``reward`` and ``applied`` (None: not reported) complete the
        previous step; ``shadow``: a shadow candidate's (version, action, log-probability of the proposal)."""

    def finish(self, reward: float | None, applied: Any, truncated: bool, final_observation: Any,
               now: float) -> None:
        """The episode ended with done (``truncated``: by a time limit) on a state seen as
        ``final_observation``."""

    def abandon(self, reason: str) -> None:
        """The episode closed without done (idle, error, shutdown): publish what there is."""

    def export(self) -> bytes:
        """The unpublished steps, to travel with the episode to another worker."""


class ExperienceRecorder(Protocol):
    """Decides which episodes are recorded and takes their steps (``worker.experience.recorder``)."""

    def open(self, episode: str, policy_version: int | None,
             resumed_at: int | None) -> EpisodeExperience | None:
        """The experience of a new episode (``resumed_at``: the seq it was resumed at after a crash), None
        when it is not sampled."""

    def adopt(self, episode: str, blob: bytes) -> EpisodeExperience | None:
        """Continue an episode's experience exported by another worker."""


AgreementHook = Callable[[int | None, bool | None], None]
"""``(policy_version, agreed)`` of a reported applied action; agreed None: not reported (shadow mode)."""


class Applied(NamedTuple):
    """A checked ``applied_action``: as a sample of the action space and as the policy's action dict (None
    when the wrapper stack changed the action space)."""

    sample: Any
    policy_action: Any


class Recording:
    """The table's collaborator for applied actions and experience (all optional)."""

    def __init__(self, spaces: ServedSpaces | None = None, recorder: ExperienceRecorder | None = None,
                 on_applied: AgreementHook | None = None, shadow: bool = False,
                 wall_clock: Callable[[], float] = time.time) -> None:
        self.spaces = spaces
        self.recorder = recorder
        self.on_applied = on_applied
        self.shadow = shadow
        """Shadow mode: states without ``applied_action`` are counted as unreported."""
        self.wall_clock = wall_clock

    def check(self, message: StateMessage) -> Applied:
        """The message's applied action checked; raises SpaceMismatchError naming ``applied_action``."""
        if self.spaces is None:
            return Applied(message.applied_action, None)
        return Applied(*self.spaces.check_applied(message.applied_action, message.actor))

    def open(self, episode: OpenEpisode, resumed_at: int | None) -> None:
        if self.recorder is not None:
            episode.experience = self.recorder.open(episode.episode, episode.policy_version, resumed_at)

    def adopt(self, episode: OpenEpisode, record: EpisodeRecord) -> None:
        """A handed-over episode: its last reply's action to compare with, its experience continued."""
        episode.proposed = _last_action(record)
        if self.recorder is not None and record.experience is not None:
            episode.experience = self.recorder.adopt(episode.episode, record.experience)

    def compare(self, episode: OpenEpisode, message: StateMessage, applied: Applied | None) -> None:
        """Agreement of the previous reply with the reported applied action (nothing to compare at seq 0)."""
        hook = self.on_applied
        if hook is None or episode.proposed is None:
            return
        if applied is not None:
            hook(episode.policy_version, same_action(episode.proposed, applied.sample))
        elif self.shadow:
            hook(episode.policy_version, None)

    def stepped(self, episode: OpenEpisode, message: StateMessage, applied: Applied | None,
                proposals: list[Any], observations: list[Any] | None, log_probs: list[Any] | None,
                now: float) -> None:
        """After the policy acted on ``message``: compare, then record (the first decision of the state)."""
        self.compare(episode, message, applied)
        experience = episode.experience
        if experience is not None and proposals and observations:
            shadow = episode.shadow
            experience.act(message.seq, observations[0], proposals[0], log_probs[0] if log_probs else None,
                           message.reward, None if applied is None else applied.policy_action, now,
                           None if shadow is None else shadow.last)

    def finished(self, episode: OpenEpisode, message: StateMessage, applied: Applied | None,
                 final_observation: Any) -> None:
        """After a done state: compare, then close the experience with the final observation."""
        self.compare(episode, message, applied)
        experience, episode.experience = episode.experience, None
        if experience is not None:
            experience.finish(message.reward, None if applied is None else applied.policy_action,
                              message.truncated, final_observation, self.wall_clock())

    @staticmethod
    def abandon(episode: OpenEpisode, reason: str) -> None:
        experience, episode.experience = episode.experience, None
        if experience is not None:
            experience.abandon(reason)

    @staticmethod
    def export(episode: OpenEpisode) -> bytes | None:
        experience, episode.experience = episode.experience, None
        return None if experience is None else experience.export()


def close_observed(deployment: AgentDeployment, message: StateMessage) -> Any:
    """``deployment.close(state, ...)`` for a done state, returning the final observation the stack made of
    it (None if it handed out a maze_action instead): the same steps, with ``observe`` handing it out."""
    actor = DEFAULT_ACTOR_ID if message.actor is None else ActorID(*message.actor)
    result = deployment.observe(message.state, message.reward, True, message.info, None, actor)
    deployment.close()
    return result.observation if type(result) is PolicyRequest else None


def _last_action(record: EpisodeRecord) -> Any:
    """The action of an episode's last reply (what its next reported applied action is compared with)."""
    body = record.replies.get(record.last_seq)
    try:
        return None if body is None else decode_reply(body).action
    except Exception:  # noqa: BLE001 - an unreadable reply only means no comparison for one state
        return None
