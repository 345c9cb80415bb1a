"""The episodes a worker holds: episode id -> AgentDeployment, sequence checks, replies, capacity, eviction.

``EpisodeTable.handle`` takes a batch of decoded states and returns one encoded reply per state, in order,
stepping the deployments' wrapper stacks together (``act_batch``: one policy call per actor). Everything here
is broker-free and synchronous; the service feeds it what the transport received.

Sequence rules, per episode: seq 0 opens it (``overloaded`` at capacity); seq = last + 1 steps it; a seq
answered recently (within ``replay_window``) gets the very same reply again, never a second step; a later
seq is ``out_of_order``, seq > 0 of an episode not held is ``unknown_episode``. A state with done=true closes
the episode and is answered with action nil; an idle episode is closed after ``idle_timeout_s``. Closing
flushes the deployment's statistics into ``FinishedEpisodes``.

Moving episodes (``worker/episodes/handoff.py``): every open episode records its steps (up to
``max_history_bytes``), ``export`` takes episodes out with their histories, ``adopt`` puts a replayed one in.
A seq > 0 of an episode not held that ``lost_check`` explains by a failover (its shard came from a crashed
worker) is handled per ``episodes.on_lost``: resumed from that state (reply flagged ``resumed``) or answered
``episode_lost``. Shadow candidates: ``worker/episodes/shadow_candidate.py``.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any

from maze_engine.core.actor_id import ActorID
from maze_engine.core.errors import MazeError, SpaceMismatchError
from maze_engine.deployment.agent_deployment import AgentDeployment
from worker.episodes.answers import (
    Answer,
    brief,
    error_answer,
    final_reply,
    lost_answer,
    out_of_order_answer,
    overloaded_answer,
    unknown_answer,
)
from worker.episodes.batching import act_by_source, act_one_source, rounds
from worker.episodes.closing import ClosedEpisode, CloseReason, FinishedEpisodes, Remembered
from worker.episodes.handoff import EpisodeRecord, History
from worker.episodes.open_episode import OpenEpisode
from worker.episodes.recording import Applied, Recording, close_observed
from worker.episodes.shadow_candidate import Shadowing
from worker.episodes.sources import DeploymentSource, PolicySources, version_of
from worker.episodes.spaces import ServedSpaces
from worker.settings import EpisodeSettings
from worker.wire.protocol import ErrorCode, StateMessage
from worker.wire.replies import encode_action_reply, to_wire_action

logger = logging.getLogger(__name__)

CLOSED_MEMORY = 4096
"""Closed episodes remembered (final reply, why they closed) for redelivered final states and clear errors."""


# Builds an Answer as ``_new_tuple(Answer, (body, code))``, without NamedTuple's Python-level __new__, which
# costs half as much again on the hot path (as PolicyRequest in maze_engine/deployment/agent_deployment.py).
_new_tuple = tuple.__new__


class EpisodeTable:
    """Open episodes keyed by id, stepped in batches; see the module docstring for the rules.

    ``factory`` makes the deployments of new episodes (``set_factory`` replaces it between batches);
    ``version_source`` builds the source of an older policy version for handed-over episodes, and
    ``on_released`` hears of a replaced source whose last episode closed. ``worker_id`` is named in every
    reply (``worker`` key); ``lost_check`` tells whether an unknown episode was lost with a crashed worker.
    ``recording`` checks reported applied actions, compares them and records experience (by default: checks
    against the factory's spaces only).
    """

    def __init__(self, factory: DeploymentSource, settings: EpisodeSettings, deterministic: bool = False,
                 clock: Callable[[], float] = time.monotonic,
                 on_closed: Callable[[ClosedEpisode], None] | None = None, *, worker_id: str | None = None,
                 lost_check: Callable[[StateMessage], bool] | None = None,
                 version_source: Callable[[int], DeploymentSource] | None = None,
                 on_released: Callable[[DeploymentSource], None] | None = None,
                 recording: Recording | None = None, shadowing: Shadowing | None = None) -> None:
        self.sources = PolicySources(factory, version_source, on_released)
        self.recording = recording or Recording(ServedSpaces.of(factory))
        self.shadowing = shadowing or Shadowing(deterministic)
        self.shadowing.attach(self.sources)
        self.settings = settings
        self.deterministic = deterministic
        self.clock = clock
        self.on_closed = on_closed
        self.worker_id = worker_id
        self.lost_check = lost_check
        self.finished = FinishedEpisodes()
        # Least recently stepped first, so idle eviction only looks at the front.
        self._open: OrderedDict[str, OpenEpisode] = OrderedDict()
        self._closed: OrderedDict[str, Remembered] = OrderedDict()

    def __len__(self) -> int:
        return len(self._open)

    def __contains__(self, episode: object) -> bool:
        return episode in self._open

    @property
    def factory(self) -> DeploymentSource:
        """Where new episodes' deployments come from."""
        return self.sources.current

    def set_factory(self, factory: DeploymentSource) -> None:
        """Serve new episodes from ``factory``; open episodes finish on the source they started on."""
        self.sources.serve(factory)

    def policy_version_of(self, episode: str) -> int | None:
        """The version acting for ``episode`` when open, else the one it would be opened with."""
        return version_of(held.source if (held := self._open.get(episode)) else self.sources.for_new(episode))

    def source_for(self, policy_version: int | None) -> DeploymentSource:
        """The source to continue a handed-over episode of ``policy_version`` with."""
        return self.sources.for_version(policy_version)

    def recently_closed(self, episode: str) -> bool:
        """Whether ``episode`` closed here lately (its states are answered from what is remembered)."""
        return episode in self._closed

    # -- batches ---------------------------------------------------------------------------------------------

    def handle(self, messages: Sequence[StateMessage]) -> list[Answer]:
        """One answer per message, in order. States of one episode are handled in seq order, one per round."""
        answers: list[Answer | None] = [None] * len(messages)
        now = self.clock()
        for round_indices in rounds(messages):
            self._handle_round(messages, round_indices, answers, now)
        assert all(answer is not None for answer in answers)
        return answers  # type: ignore[return-value]

    def _handle_round(self, messages: Sequence[StateMessage], indices: Sequence[int],
                      answers: list[Answer | None], now: float) -> None:
        acting: list[tuple[int, OpenEpisode]] = []
        finishing: list[tuple[int, OpenEpisode]] = []
        applied: dict[int, Applied] = {}
        for index in indices:
            message = messages[index]
            episode = self._open.get(message.episode)
            if episode is None:
                opened = self._open_episode(message, now)
                if isinstance(opened, Answer):
                    answers[index] = opened
                    continue
                episode = opened
            elif message.seq != episode.last_seq + 1:
                answers[index] = self._repeat_or_reject(episode, message)
                continue
            if message.applied_action is not None:  # checked before anything steps
                try:
                    applied[index] = self.recording.check(message)
                except SpaceMismatchError as err:
                    answers[index] = self._failed(episode, message, err)
                    continue
            (finishing if message.done else acting).append((index, episode))
        for index, episode in finishing:
            answers[index] = self._finish(episode, messages[index], applied.get(index), now)
        if acting:
            self._act(messages, acting, answers, now, applied)

    def _open_episode(self, message: StateMessage, now: float) -> OpenEpisode | Answer:
        """The new episode ``message`` opens (seq 0, or a lost one resumed), or the answer refusing it."""
        lost = message.seq != 0 and self._is_lost(message)
        if message.seq != 0 and not lost:
            return unknown_answer(message, self._closed.get(message.episode), self.settings)
        if lost and self.settings.on_lost == "error":
            return lost_answer(message)
        if len(self._open) >= self.settings.max_open:
            return overloaded_answer(message, self.settings.max_open)
        source = self.sources.for_new(message.episode)
        try:
            deployment = source.create()
        except Exception as err:  # noqa: BLE001 - a broken factory must not stop the worker
            logger.exception("creating a deployment for episode %s failed", message.episode)
            return error_answer(message.episode, 0, ErrorCode.INTERNAL,
                                f"creating the episode's deployment failed: {brief(err)}")
        episode = self._new_episode(message.episode, deployment, now, source)
        if lost:
            logger.warning("episode %s: resuming at seq %d, its earlier state was lost with a crashed worker",
                           message.episode, message.seq)
            episode.last_seq = message.seq - 1
            episode.resumed_seq = message.seq
        self._open[message.episode] = episode
        self._closed.pop(message.episode, None)
        self.recording.open(episode, message.seq if lost else None)
        self.shadowing.open(episode)
        return episode

    def _act(self, messages: Sequence[StateMessage], acting: list[tuple[int, OpenEpisode]],
             answers: list[Answer | None], now: float, applied: dict[int, Applied]) -> None:
        items: list[tuple[AgentDeployment, tuple[Any, ...]]] = []
        source = acting[0][1].source
        one_source = True
        for index, episode in acting:
            message = messages[index]
            actor = message.actor
            # Plain tuples are act's positional arguments; the actor id only when the producer named one.
            inputs = (message.state, message.reward, False, message.info) if actor is None else \
                (message.state, message.reward, False, message.info, None, ActorID(actor[0], actor[1]))
            items.append((episode.deployment, inputs))
            if episode.source is not source:
                one_source = False
        recording = self.recording
        record = recording.recorder is not None
        shadowing = self.shadowing
        noted = record or shadowing.running > 0  # observations and log-probabilities wanted
        actions: list[list[Any]] = []
        observations: list[list[Any]] | None = [] if noted else None
        log_probs: list[list[Any]] | None = [] if noted else None
        if one_source:
            results = act_one_source(items, source, self.deterministic, actions, observations, log_probs)
        else:  # episodes on two policy versions: one forward pass per version
            results, actions, observations, log_probs = act_by_source(
                items, [episode.source for _, episode in acting], self.deterministic, noted)
        if shadowing.running and log_probs is not None:  # before proposals move on: overrides compare them
            shadowing.step(messages, acting, [inputs for _, inputs in items], results, actions, log_probs,
                           applied)
        # What is only noted for applied actions, shadow mode and recorded episodes.
        noting = bool(applied) or recording.shadow or record
        wall = recording.wall_clock() if noting else 0.0
        move_to_end = self._open.move_to_end
        window = self.settings.replay_window
        worker = self.worker_id
        history_limit = self.settings.max_history_bytes
        for number, ((index, episode), result) in enumerate(zip(acting, results, strict=True)):
            message = messages[index]
            if isinstance(result, BaseException):
                answers[index] = self._failed(episode, message, result)
                continue
            seq = message.seq
            try:
                if seq == episode.resumed_seq:
                    body = final_reply(message, to_wire_action(result), episode.policy_version, worker,
                                       resumed=True)
                else:
                    body = encode_action_reply(message.episode, seq, result, worker, episode.policy_version)
            except Exception as err:  # noqa: BLE001 - an action msgpack cannot carry is the policy's fault
                answers[index] = self._failed(episode, message, err)
                continue
            if noting:
                recording.stepped(episode, message, applied.get(index), actions[number],
                                  None if observations is None else observations[number],
                                  None if log_probs is None else log_probs[number], wall)
            episode.proposed = result
            history = episode.history
            if history is not None:
                history.record(message.state, message.reward, message.info, message.actor, actions[number])
                episode.history_bytes += message.size
                if episode.history_bytes > history_limit:
                    episode.drop_history(history_limit)
            replies = episode.replies
            replies[seq] = body
            replies.pop(seq - window, None)
            episode.last_seq = seq
            episode.last_seen = now
            move_to_end(message.episode)
            answers[index] = _new_tuple(Answer, (body, None))

    def _finish(self, episode: OpenEpisode, message: StateMessage, applied: Applied | None,
                now: float) -> Answer:
        """done=true: pass the final state through the stack, close the episode, answer with action nil."""
        final_observation = None
        try:
            if episode.experience is None:
                episode.deployment.close(message.state, message.reward, True, message.info)
            else:
                final_observation = close_observed(episode.deployment, message)
        except Exception as err:  # noqa: BLE001 - bad final states and failing wrappers are answered
            return self._failed(episode, message, err)
        self.recording.finished(episode, message, applied, final_observation)
        self.shadowing.finish(episode, message, applied)
        body = final_reply(message, None, episode.policy_version, self.worker_id,
                           resumed=message.seq == episode.resumed_seq)
        self._close(episode, CloseReason.DONE, message.seq, body, flush=False)
        return Answer(body, None)

    def _failed(self, episode: OpenEpisode, message: StateMessage, err: BaseException) -> Answer:
        if isinstance(err, SpaceMismatchError) and episode.deployment.failure is None:
            # The deployment rejected the input before stepping anything: the episode stays as it was
            # (a first state that did not fit leaves no episode behind, so seq 0 can be sent again).
            if episode.last_seq < 0:
                self.recording.abandon(episode, "bad_first_state")
                self._forget(episode)
            return error_answer(message.episode, message.seq, ErrorCode.BAD_MESSAGE, str(err))
        logger.error("episode %s, seq %d: %s; closing the episode", message.episode, message.seq, brief(err),
                     exc_info=err)
        self._close(episode, CloseReason.ERROR, episode.last_seq, None, flush=True)
        return error_answer(message.episode, message.seq, ErrorCode.INTERNAL,
                            f"{brief(err)}; the episode was closed, start a new one")

    def _is_lost(self, message: StateMessage) -> bool:
        check = self.lost_check
        return check is not None and message.episode not in self._closed and check(message)

    def _repeat_or_reject(self, episode: OpenEpisode, message: StateMessage) -> Answer:
        cached = episode.replies.get(message.seq)
        if cached is not None:
            return Answer(cached, None)
        return out_of_order_answer(message, episode.last_seq, self.settings.replay_window)

    # -- closing ---------------------------------------------------------------------------------------------

    def _close(self, episode: OpenEpisode, reason: CloseReason, last_seq: int, reply: bytes | None,
               flush: bool) -> None:
        """Remove ``episode``; ``flush`` ends its deployment's episode so wrappers write their statistics."""
        self.recording.abandon(episode, reason.value)
        self._forget(episode)
        if flush:
            try:
                episode.deployment.close()
            except Exception as err:  # noqa: BLE001 - an episode that cannot flush is still closed
                logger.warning("episode %s: flushing statistics failed: %s", episode.episode, brief(err))
        closed = ClosedEpisode.of(episode, reason, last_seq)
        self._closed[episode.episode] = Remembered(reason, last_seq, reply)
        if len(self._closed) > CLOSED_MEMORY:
            self._closed.popitem(last=False)
        self.finished.add(closed)
        if self.on_closed is not None:
            self.on_closed(closed)

    def evict_idle(self, now: float | None = None) -> int:
        """Close the episodes idle for longer than ``idle_timeout_s``; returns how many."""
        now = self.clock() if now is None else now
        deadline = now - self.settings.idle_timeout_s
        evicted = 0
        while self._open:
            episode = next(iter(self._open.values()))
            if episode.last_seen > deadline:
                break
            self._close(episode, CloseReason.IDLE, episode.last_seq, None, flush=True)
            evicted += 1
        if evicted:
            logger.info("closed %d episodes idle for more than %g s", evicted, self.settings.idle_timeout_s)
        return evicted

    def close_all(self, reason: CloseReason = CloseReason.SHUTDOWN) -> int:
        """Close every open episode (statistics flushed); returns how many."""
        count = 0
        while self._open:
            episode = next(iter(self._open.values()))
            self._close(episode, reason, episode.last_seq, None, flush=True)
            count += 1
        return count

    # -- moving episodes -------------------------------------------------------------------------------------

    def export(self, episodes: Sequence[str]) -> list[EpisodeRecord]:
        """Take the open ``episodes`` out of the table (statistics not flushed: they go on elsewhere) and
        return their records; ids not held are skipped, and so are episodes whose history was dropped (the
        new owner handles their next state as lost)."""
        records: list[EpisodeRecord] = []
        for episode_id in episodes:
            episode = self._open.get(episode_id)
            if episode is None:
                continue
            self._forget(episode)
            if episode.history is None:
                logger.warning("episode %s is not handed over: its history outgrew episodes."
                               "max_history_bytes", episode_id)
                self.recording.abandon(episode, "not_handed_over")
            else:
                records.append(EpisodeRecord(episode_id, episode.last_seq, dict(episode.replies),
                                             episode.history.steps(), episode.policy_version,
                                             self.recording.export(episode)))
            episode.deployment.abort(MazeError("the episode was handed off to another worker"))
        return records

    def adopt(self, record: EpisodeRecord, deployment: AgentDeployment,
              source: DeploymentSource | None = None) -> bool:
        """Hold ``record``'s episode with ``deployment`` (already replayed to it, built by ``source``, by
        default the current factory); False (nothing changed) when the table holds the episode at the same
        or a later seq."""
        held = self._open.get(record.episode)
        if held is not None and held.last_seq >= record.last_seq:
            return False
        if held is not None:
            held.deployment.abort(MazeError("replaced by a newer hand-off of the episode"))
            self._forget(held)
        episode = self._new_episode(record.episode, deployment, self.clock(), source or self.sources.current)
        episode.last_seq = record.last_seq
        episode.replies = dict(record.replies)
        episode.history = History(record.steps)
        self.recording.adopt(episode, record)
        self._open[record.episode] = episode
        self._closed.pop(record.episode, None)
        return True

    def _new_episode(self, episode_id: str, deployment: AgentDeployment, now: float,
                     source: DeploymentSource) -> OpenEpisode:
        self.sources.acquire(source)
        return OpenEpisode(episode_id, deployment, now, source)

    def _forget(self, episode: OpenEpisode) -> None:
        """Take ``episode`` out of the open ones and release its source."""
        if self._open.pop(episode.episode, None) is not None:
            self.sources.release(episode.source)
            self.shadowing.drop(episode)
