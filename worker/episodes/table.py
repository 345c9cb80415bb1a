"""The episodes a worker holds: episode id -> AgentDeployment, sequence checks, replies, capacity, eviction.

``EpisodeTable.handle`` takes a batch of decoded states and returns one encoded reply per state, in order. The
states that step their episode go through their deployments' wrapper stacks together (``act_batch``: one
policy call per actor), so the batch costs one forward pass. Everything here is broker-free and synchronous;
the service feeds it what the transport received.

Sequence rules, per episode: seq 0 opens it (``overloaded`` at capacity); seq = last + 1 steps it; a seq
answered recently (within ``replay_window``) gets the very same reply again, never a second step; a later
seq is ``out_of_order``, seq > 0 of an episode not held is ``unknown_episode``. A state with done=true closes
the episode and is answered with action nil; an idle episode is closed after ``idle_timeout_s``. Closing
flushes the deployment's statistics into ``FinishedEpisodes``.

Moving episodes (``worker/episodes/handoff.py``): every open episode records its steps, ``export`` takes
episodes out with their histories and ``adopt`` puts a replayed one in. A seq > 0 of an episode not held that
``lost_check`` explains by a failover (its shard came from a crashed worker) is handled per
``episodes.on_lost``: resumed from that state (reply flagged ``resumed``) or answered ``episode_lost``.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, NamedTuple, Protocol

import msgpack
import numpy as np

from maze_engine.core.actor_id import ActorID
from maze_engine.core.errors import MazeError, SpaceMismatchError
from maze_engine.core.stats.running import RunningStats
from maze_engine.deployment.agent_deployment import AgentDeployment
from maze_engine.deployment.batch import act_batch
from maze_engine.wrappers.logging.log_stats import EpisodeStats, LogStatsWrapper
from maze_engine.wrappers.wrapper import find_wrapper
from worker.episodes.handoff import EpisodeRecord, History
from worker.settings import EpisodeSettings
from worker.wire.protocol import (
    POLICY_VERSION_FIELD,
    PROTOCOL_VERSION,
    RESUMED_FIELD,
    WORKER_FIELD,
    ErrorCode,
    ErrorInfo,
    Reply,
    StateMessage,
    encode_reply,
    to_wire_action,
)

logger = logging.getLogger(__name__)

CLOSED_MEMORY = 4096
"""Closed episodes remembered (final reply, why they closed) for redelivered final states and clear errors."""


class DeploymentSource(Protocol):
    """What the table needs from a DeploymentFactory: fresh deployments sharing one policy.

    A source may also have ``policy_version`` (the published version of its policy), which the replies of its
    episodes carry; without it they carry nil.
    """

    policy: Any

    def create(self) -> AgentDeployment: ...


class CloseReason(StrEnum):
    """Why an episode left the table (the ``reason`` label of the episodes-closed metric)."""

    DONE = "done"
    IDLE = "idle"
    ERROR = "error"
    SHUTDOWN = "shutdown"


class Answer(NamedTuple):
    """The encoded reply to one state, and its error code (None for an action)."""

    body: bytes
    code: ErrorCode | None


# Builds an Answer as ``_new_tuple(Answer, (body, code))``, without NamedTuple's Python-level __new__, which
# costs half as much again on the hot path (as PolicyRequest in maze_engine/deployment/agent_deployment.py).
_new_tuple = tuple.__new__


@dataclass(frozen=True)
class ClosedEpisode:
    """An episode that left the table; ``stats`` are its return and length where a LogStatsWrapper saw it."""

    episode: str
    reason: CloseReason
    last_seq: int
    stats: EpisodeStats | None


class _Episode:
    """One open episode: its deployment, the last seq stepped and the replies kept for redeliveries."""

    __slots__ = ("episode", "deployment", "last_seq", "replies", "last_seen", "history", "resumed_seq",
                 "source", "policy_version")

    def __init__(self, episode: str, deployment: AgentDeployment, now: float, source: Any = None) -> None:
        self.episode = episode
        self.deployment = deployment
        self.source = source
        """The DeploymentSource the deployment came from: its policy acts for the whole episode."""
        self.policy_version: int | None = getattr(source, "policy_version", None)
        self.last_seq = -1
        self.replies: dict[int, bytes] = {}
        self.last_seen = now
        self.history = History()
        """Every step so far (inputs and policy actions): what a new owner replays."""
        self.resumed_seq = -1
        """The seq this episode was resumed at after a lost state (its reply says so), else -1."""


class _Closed(NamedTuple):
    reason: CloseReason
    last_seq: int
    reply: bytes | None


def error_answer(episode: str | None, seq: int | None, code: ErrorCode, message: str) -> Answer:
    """An encoded error reply."""
    return Answer(encode_reply(Reply(episode, seq, None, ErrorInfo(code, message))), code)


_pack = msgpack.Packer(default=lambda value: to_wire_action(value)).pack
_FIELD = {name: _pack(name) for name in ("v", "episode", "seq", "action", "error", POLICY_VERSION_FIELD,
                                         WORKER_FIELD)}
_REPLY_HEAD = _FIELD["v"] + _pack(PROTOCOL_VERSION) + _FIELD["episode"]
_reply_frames: dict[tuple[str | None, int | None], tuple[bytes, bytes]] = {}
"""(worker, policy_version) -> the bytes before the episode and after the action of an action reply."""


def encode_action_reply(episode: str, seq: int, action: Any, worker: str | None = None,
                        policy_version: int | None = None) -> bytes:
    """``encode_reply(Reply(episode, seq, to_wire_action(action), extra={"policy_version": policy_version}))``
    without building the Reply: the hot path.

    The same bytes as the protocol's encoder (a test holds them equal); numpy values become plain numbers.
    ``worker`` adds the answering worker's id (the ``worker`` key). Only the episode, seq and action are
    packed per reply; the map's other keys and values are packed once per worker and policy version.
    """
    if type(action) is np.int64:  # Discrete actions, the common case
        action = int(action)
    frame = _reply_frames.get((worker, policy_version))
    if frame is None:
        frame = _reply_frames[(worker, policy_version)] = _reply_frame(worker, policy_version)
    head, tail = frame
    return b"".join((head, _pack(episode), _FIELD["seq"], _pack(seq), _FIELD["action"], _pack(action), tail))


def _reply_frame(worker: str | None, policy_version: int | None) -> tuple[bytes, bytes]:
    tail = _FIELD["error"] + _pack(None) + _FIELD[POLICY_VERSION_FIELD] + _pack(policy_version)
    if worker is None:
        return b"\x86" + _REPLY_HEAD, tail  # a map of 6 entries (fixmap)
    return b"\x87" + _REPLY_HEAD, tail + _FIELD[WORKER_FIELD] + _pack(worker)


class FinishedEpisodes:
    """Statistics of the episodes closed since the last ``take``: count, returns and lengths."""

    def __init__(self) -> None:
        self.total = 0
        self.by_reason: dict[str, int] = {}
        self.returns = RunningStats()
        self.lengths = RunningStats()

    def add(self, closed: ClosedEpisode) -> None:
        self.total += 1
        self.by_reason[closed.reason.value] = self.by_reason.get(closed.reason.value, 0) + 1
        if closed.stats is not None and closed.stats.episode_length > 0:
            self.returns.add(closed.stats.episode_return)
            self.lengths.add(closed.stats.episode_length)

    def take(self) -> FinishedEpisodes:
        """The statistics gathered so far; this object starts afresh."""
        taken = FinishedEpisodes()
        taken.total, taken.by_reason, taken.returns, taken.lengths = \
            self.total, self.by_reason, self.returns, self.lengths
        self.__init__()  # type: ignore[misc]
        return taken


class EpisodeTable:
    """Open episodes keyed by id, stepped in batches; see the module docstring for the rules."""

    def __init__(self, factory: DeploymentSource, settings: EpisodeSettings, deterministic: bool = False,
                 clock: Callable[[], float] = time.monotonic,
                 on_closed: Callable[[ClosedEpisode], None] | None = None) -> None:
        self.factory = factory
        self.settings = settings
        self.deterministic = deterministic
        self.clock = clock
        self.on_closed = on_closed
        self.finished = FinishedEpisodes()
        # Least recently stepped first, so idle eviction only looks at the front.
        self._open: OrderedDict[str, _Episode] = OrderedDict()
        self._closed: OrderedDict[str, _Closed] = OrderedDict()
        self.worker_id: str | None = None
        """Named in every action reply (``worker`` key) when set."""
        self.lost_check: Callable[[StateMessage], bool] | None = None
        """Whether a seq > 0 of an episode not held is explained by a failover (then ``on_lost`` applies)."""
        self.on_released: Callable[[DeploymentSource], None] | None = None
        """Called when a source replaced by ``set_factory`` loses its last episode (its policy is let go)."""
        self._users: dict[int, int] = {}
        """id(source) -> open episodes created from it."""
        self._sources: dict[int, DeploymentSource] = {}
        """id(source) -> the source, for the sources open episodes use."""
        self.version_source: Callable[[int], DeploymentSource] | None = None
        """Builds the source of a given policy version (for episodes handed over on an older version)."""

    def __len__(self) -> int:
        return len(self._open)

    def __contains__(self, episode: object) -> bool:
        return episode in self._open

    def recently_closed(self, episode: str) -> bool:
        """Whether ``episode`` closed here lately (its states are answered from what is remembered)."""
        return episode in self._closed

    # -- batches ---------------------------------------------------------------------------------------------

    def handle(self, messages: Sequence[StateMessage]) -> list[Answer]:
        """One answer per message, in order. States of one episode are handled in seq order, one per round."""
        answers: list[Answer | None] = [None] * len(messages)
        now = self.clock()
        for round_indices in _rounds(messages):
            self._handle_round(messages, round_indices, answers, now)
        assert all(answer is not None for answer in answers)
        return answers  # type: ignore[return-value]

    def _handle_round(self, messages: Sequence[StateMessage], indices: Sequence[int],
                      answers: list[Answer | None], now: float) -> None:
        acting: list[tuple[int, _Episode]] = []
        finishing: list[tuple[int, _Episode]] = []
        for index in indices:
            message = messages[index]
            episode = self._open.get(message.episode)
            if episode is None:
                lost = message.seq != 0 and self._is_lost(message)
                if message.seq != 0 and not lost:
                    answers[index] = self._unknown(message)
                    continue
                if lost and self.settings.on_lost == "error":
                    answers[index] = error_answer(
                        message.episode, message.seq, ErrorCode.EPISODE_LOST,
                        "episode: its state was lost with a crashed worker; start a new episode with seq 0")
                    continue
                if len(self._open) >= self.settings.max_open:
                    answers[index] = error_answer(
                        message.episode, message.seq, ErrorCode.OVERLOADED,
                        f"episode: the worker holds its maximum of {self.settings.max_open} open episodes; "
                        "retry later or on another worker")
                    continue
                source = self.factory
                try:
                    deployment = source.create()
                except Exception as err:  # noqa: BLE001 - a broken factory must not stop the worker
                    logger.exception("creating a deployment for episode %s failed", message.episode)
                    answers[index] = error_answer(message.episode, 0, ErrorCode.INTERNAL,
                                                  f"creating the episode's deployment failed: {_brief(err)}")
                    continue
                episode = self._new_episode(message.episode, deployment, now, source)
                if lost:
                    logger.warning("episode %s: resuming at seq %d, its earlier state was lost with a "
                                   "crashed worker", message.episode, message.seq)
                    episode.last_seq = message.seq - 1
                    episode.resumed_seq = message.seq
                self._open[message.episode] = episode
                self._closed.pop(message.episode, None)
            elif message.seq != episode.last_seq + 1:
                answers[index] = self._repeat_or_reject(episode, message)
                continue
            (finishing if message.done else acting).append((index, episode))
        for index, episode in finishing:
            answers[index] = self._finish(episode, messages[index], now)
        if acting:
            self._act(messages, acting, answers, now)

    def _act(self, messages: Sequence[StateMessage], acting: list[tuple[int, _Episode]],
             answers: list[Answer | None], now: float) -> None:
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
        actions: list[list[Any]] = []
        if one_source:
            results = self._act_batch(items, source, actions)
        else:  # episodes on two policy versions: one forward pass per version
            results, actions = self._act_by_source(items, [episode.source for _, episode in acting])
        move_to_end = self._open.move_to_end
        window = self.settings.replay_window
        worker = self.worker_id
        for number, ((index, episode), result) in enumerate(zip(acting, results, strict=True)):
            message = messages[index]
            if isinstance(result, BaseException):
                answers[index] = self._failed(episode, message, result)
                continue
            seq = message.seq
            try:
                if seq == episode.resumed_seq:
                    body = self._resumed_reply(message, to_wire_action(result), episode.policy_version)
                else:
                    body = encode_action_reply(message.episode, seq, result, worker, episode.policy_version)
            except Exception as err:  # noqa: BLE001 - an action msgpack cannot carry is the policy's fault
                answers[index] = self._failed(episode, message, err)
                continue
            episode.history.record(message.state, message.reward, message.info, message.actor,
                                   actions[number])
            replies = episode.replies
            replies[seq] = body
            replies.pop(seq - window, None)
            episode.last_seq = seq
            episode.last_seen = now
            move_to_end(message.episode)
            answers[index] = _new_tuple(Answer, (body, None))

    def _finish(self, episode: _Episode, message: StateMessage, now: float) -> Answer:
        """done=true: pass the final state through the stack, close the episode, answer with action nil."""
        try:
            episode.deployment.close(message.state, message.reward, True, message.info)
        except Exception as err:  # noqa: BLE001 - bad final states and failing wrappers are answered
            return self._failed(episode, message, err)
        if message.seq == episode.resumed_seq:
            body = self._resumed_reply(message, None, episode.policy_version)
        else:
            extra: dict[str, Any] = {POLICY_VERSION_FIELD: episode.policy_version}
            if self.worker_id is not None:
                extra[WORKER_FIELD] = self.worker_id
            body = encode_reply(Reply(message.episode, message.seq, None, extra=extra))
        self._close(episode, CloseReason.DONE, message.seq, body, flush=False)
        return Answer(body, None)

    def _failed(self, episode: _Episode, message: StateMessage, err: BaseException) -> Answer:
        if isinstance(err, SpaceMismatchError) and episode.deployment.failure is None:
            # The deployment rejected the input before stepping anything: the episode stays as it was
            # (a first state that did not fit leaves no episode behind, so seq 0 can be sent again).
            if episode.last_seq < 0:
                self._forget(episode)
            return error_answer(message.episode, message.seq, ErrorCode.BAD_MESSAGE, str(err))
        logger.error("episode %s, seq %d: %s; closing the episode", message.episode, message.seq, _brief(err),
                     exc_info=err)
        self._close(episode, CloseReason.ERROR, episode.last_seq, None, flush=True)
        return error_answer(message.episode, message.seq, ErrorCode.INTERNAL,
                            f"{_brief(err)}; the episode was closed, start a new one")

    def _resumed_reply(self, message: StateMessage, action: Any, policy_version: int | None = None) -> bytes:
        extra: dict[str, Any] = {POLICY_VERSION_FIELD: policy_version, RESUMED_FIELD: True}
        if self.worker_id is not None:
            extra[WORKER_FIELD] = self.worker_id
        return encode_reply(Reply(message.episode, message.seq, action, extra=extra))

    def _is_lost(self, message: StateMessage) -> bool:
        check = self.lost_check
        return check is not None and message.episode not in self._closed and check(message)

    def _repeat_or_reject(self, episode: _Episode, message: StateMessage) -> Answer:
        cached = episode.replies.get(message.seq)
        if cached is not None:
            return Answer(cached, None)
        expected = episode.last_seq + 1
        if message.seq > expected:
            return error_answer(message.episode, message.seq, ErrorCode.OUT_OF_ORDER,
                                f"seq: expected {expected} (the next step of the episode), got {message.seq}")
        return error_answer(message.episode, message.seq, ErrorCode.OUT_OF_ORDER,
                            f"seq: expected {expected} (the next step of the episode), got {message.seq}, "
                            f"older than the last {self.settings.replay_window} replies kept")

    def _unknown(self, message: StateMessage) -> Answer:
        closed = self._closed.get(message.episode)
        if closed is not None:
            if closed.reply is not None and message.seq == closed.last_seq:
                return Answer(closed.reply, None)
            why = {CloseReason.DONE: f"finished at seq {closed.last_seq}",
                   CloseReason.IDLE: f"closed after {self.settings.idle_timeout_s:g} s without a state",
                   CloseReason.ERROR: "closed after an internal error",
                   CloseReason.SHUTDOWN: "closed when the worker shut down"}[closed.reason]
            detail = f"the episode {why}"
        else:
            detail = "the worker holds no such episode (start episodes with seq 0)"
        return error_answer(message.episode, message.seq, ErrorCode.UNKNOWN_EPISODE, f"episode: {detail}")

    # -- closing ---------------------------------------------------------------------------------------------

    def _close(self, episode: _Episode, reason: CloseReason, last_seq: int, reply: bytes | None,
               flush: bool) -> None:
        """Remove ``episode``; ``flush`` ends its deployment's episode so wrappers write their statistics."""
        self._forget(episode)
        if flush:
            try:
                episode.deployment.close()
            except Exception as err:  # noqa: BLE001 - an episode that cannot flush is still closed
                logger.warning("episode %s: flushing statistics failed: %s", episode.episode, _brief(err))
        closed = ClosedEpisode(episode.episode, reason, last_seq, _episode_stats(episode.deployment))
        self._closed[episode.episode] = _Closed(reason, last_seq, reply)
        if len(self._closed) > CLOSED_MEMORY:
            self._closed.popitem(last=False)
        self.finished.add(closed)
        if self.on_closed is not None:
            self.on_closed(closed)

    # -- moving episodes -------------------------------------------------------------------------------------

    def export(self, episodes: Sequence[str]) -> list[EpisodeRecord]:
        """Take the open ``episodes`` out of the table (statistics not flushed: they go on elsewhere) and
        return their records; ids not held are skipped."""
        records: list[EpisodeRecord] = []
        for episode_id in episodes:
            episode = self._open.get(episode_id)
            if episode is None:
                continue
            self._forget(episode)
            records.append(EpisodeRecord(episode_id, episode.last_seq, dict(episode.replies),
                                         episode.history.steps(),
                                         episode.policy_version))
            episode.deployment.abort(MazeError("the episode was handed off to another worker"))
        return records

    def adopt(self, record: EpisodeRecord, deployment: AgentDeployment,
              source: DeploymentSource | None = None) -> bool:
        """Hold ``record``'s episode with ``deployment`` (already replayed to it, built by ``source``, by
        default the table's factory); False (nothing changed) when the table holds the episode at the same
        or a later seq."""
        held = self._open.get(record.episode)
        if held is not None and held.last_seq >= record.last_seq:
            return False
        if held is not None:
            held.deployment.abort(MazeError("replaced by a newer hand-off of the episode"))
            self._forget(held)
        episode = self._new_episode(record.episode, deployment, self.clock(), source or self.factory)
        episode.last_seq = record.last_seq
        episode.replies = dict(record.replies)
        episode.history = History(record.steps)
        self._open[record.episode] = episode
        self._closed.pop(record.episode, None)
        return True

    # -- policy versions -------------------------------------------------------------------------------------

    def set_factory(self, factory: DeploymentSource) -> None:
        """Serve new episodes from ``factory``; open episodes finish on the source they started on.

        Call between batches. The replaced source is handed to ``on_released`` once no open episode uses it.
        """
        old, self.factory = self.factory, factory
        if old is not factory and not self._users.get(id(old)):
            self._released(old)

    def _new_episode(self, episode_id: str, deployment: AgentDeployment, now: float,
                     source: DeploymentSource) -> _Episode:
        self._users[id(source)] = self._users.get(id(source), 0) + 1
        self._sources[id(source)] = source
        return _Episode(episode_id, deployment, now, source)

    def _forget(self, episode: _Episode) -> None:
        """Take ``episode`` out of the open ones and release its source when it was the last user."""
        if self._open.pop(episode.episode, None) is None:
            return
        source = episode.source
        left = self._users.get(id(source), 0) - 1
        if left > 0:
            self._users[id(source)] = left
            return
        self._users.pop(id(source), None)
        self._sources.pop(id(source), None)
        if source is not self.factory:
            self._released(source)

    def _released(self, source: DeploymentSource) -> None:
        if self.on_released is not None:
            self.on_released(source)

    def _act_batch(self, items: list[tuple[AgentDeployment, tuple[Any, ...]]], source: DeploymentSource,
                   actions: list[list[Any]]) -> list[Any]:
        try:
            return act_batch(items, source.policy, self.deterministic, actions)
        except Exception as err:  # noqa: BLE001 - act_batch returns per-item errors; this is a last resort
            logger.exception("stepping a batch of %d states failed", len(items))
            actions[:] = [[] for _ in items]
            return [err] * len(items)

    def _act_by_source(self, items: list[tuple[AgentDeployment, tuple[Any, ...]]],
                       sources: list[DeploymentSource]) -> tuple[list[Any], list[list[Any]]]:
        """``_act_batch`` per source (policy version), results and actions back in the order of ``items``."""
        groups: dict[int, list[int]] = {}
        for position, source in enumerate(sources):
            groups.setdefault(id(source), []).append(position)
        results: list[Any] = [None] * len(items)
        actions: list[list[Any]] = [[] for _ in items]
        for positions in groups.values():
            group_actions: list[list[Any]] = []
            group = [items[position] for position in positions]
            group_results = self._act_batch(group, sources[positions[0]], group_actions)
            for position, result, taken in zip(positions, group_results, group_actions, strict=True):
                results[position] = result
                actions[position] = taken
        return results, actions

    def source_for(self, policy_version: int | None) -> DeploymentSource:
        """The source of ``policy_version`` for an episode handed over from another worker: the factory or
        a source open episodes use when one has that version, else one built by ``version_source``; the
        factory (with a logged warning) when that version cannot be had, so the episode still goes on."""
        factory = self.factory
        if policy_version is None or getattr(factory, "policy_version", None) == policy_version:
            return factory
        for source in self._sources.values():
            if getattr(source, "policy_version", None) == policy_version:
                return source
        if self.version_source is not None:
            try:
                return self.version_source(policy_version)
            except Exception as err:  # noqa: BLE001 - a version gone from the artifact root must not lose it
                logger.warning("policy version %d of a handed-over episode cannot be loaded (%s); the "
                               "episode goes on with the current version", policy_version, _brief(err))
        return factory

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


def _rounds(messages: Sequence[StateMessage]) -> list[list[int]]:
    """Indices grouped into rounds with at most one state per episode, each episode's states in seq order."""
    count = len(messages)
    episodes = [message.episode for message in messages]
    if len(set(episodes)) == count:
        return [list(range(count))]
    by_episode: dict[str, list[int]] = {}
    for index, episode in enumerate(episodes):
        by_episode.setdefault(episode, []).append(index)
    rounds: list[list[int]] = []
    for indices in by_episode.values():
        indices.sort(key=lambda index: messages[index].seq)
        for position, index in enumerate(indices):
            if position == len(rounds):
                rounds.append([])
            rounds[position].append(index)
    for round_indices in rounds:
        round_indices.sort()
    return rounds


def _episode_stats(deployment: AgentDeployment) -> EpisodeStats | None:
    wrapper = find_wrapper(deployment.env, LogStatsWrapper)
    return None if wrapper is None else wrapper.last_episode_stats


def _brief(err: BaseException) -> str:
    text = f"{type(err).__name__}: {err}"
    return text if len(text) <= 300 else text[:297] + "..."
