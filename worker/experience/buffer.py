"""The recorded steps of one episode on this worker: completed steps, the step awaiting its outcome, chunks.

A step is the policy's decision on one state: the observation it saw, its proposal and log-probability. Its
outcome arrives with the *next* state: the reward, the action the producer applied (``applied_action``,
else the proposal), and whether that state ended the episode. So the latest decision waits (``pending``)
until the next state completes it. Every ``chunk_steps`` completed steps leave as a ``Chunk``; the end of
the episode sends the rest as the final chunk with the final observation.

Appending is all the reply path does: a few list appends per state. Stacking into columns and encoding
happen on the publisher thread (``Chunk.record``).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

from worker.experience.record import ExperienceRecord, RecordError, pack, stack, unpack, unstack

_FIELDS = ("seqs", "observations", "proposals", "log_probs", "applied", "reported", "rewards", "terminated",
           "truncated", "times", "shadow_actions", "shadow_log_probs")
_OPTIONAL = ("log_probs", "rewards", "shadow_actions", "shadow_log_probs")
"""Fields whose steps may hold None (kept as lists when they do, in hand-offs)."""

Shadow = tuple[int | None, Any, float | None]
"""A shadow candidate's side of a step: its version, its action, its log-probability of the served action."""


class Chunk:
    """Steps on their way to the publisher thread, as lists (``record`` stacks them into columns)."""

    __slots__ = ("run", "episode", "chunk", "final", "end", "policy_version", "resumed_at", "first_seq",
                 "lists", "final_observation", "shadow_version")

    def __init__(self, run: str, episode: str, chunk: int, final: bool, end: str | None,
                 policy_version: int | None, resumed_at: int | None, first_seq: int, lists: dict[str, list],
                 final_observation: Any, shadow_version: int | None = None) -> None:
        self.run, self.episode, self.chunk, self.final, self.end = run, episode, chunk, final, end
        self.policy_version, self.resumed_at, self.first_seq = policy_version, resumed_at, first_seq
        self.lists = lists
        self.final_observation = final_observation
        self.shadow_version = shadow_version

    @property
    def steps(self) -> int:
        return len(self.lists["seqs"])

    def record(self, worker: str, policy_name: str, mode: str, published: float) -> ExperienceRecord:
        """The record of this chunk (columns stacked here, off the reply path)."""
        return ExperienceRecord(self.run, self.episode, self.chunk, self.final, worker, policy_name,
                                self.policy_version, mode, self.first_seq, self.steps, columns(self.lists),
                                self.end, self.final_observation, self.resumed_at, published,
                                self.shadow_version)


def columns(lists: dict[str, list]) -> dict[str, Any] | None:
    """The record columns of per-step lists (None for no steps)."""
    if not lists["seqs"]:
        return None
    return {**_shadow_columns(lists), "seq": np.asarray(lists["seqs"], dtype=np.int64),
            "observation": stack(lists["observations"]),
            "action": stack(lists["proposals"]),
            "log_prob": np.asarray([math.nan if value is None else value for value in lists["log_probs"]],
                                   dtype=np.float64),
            "applied_action": stack(lists["applied"]),
            "applied_reported": np.asarray(lists["reported"], dtype=np.bool_),
            "reward": np.asarray([math.nan if value is None else value for value in lists["rewards"]],
                                 dtype=np.float64),
            "terminated": np.asarray(lists["terminated"], dtype=np.bool_),
            "truncated": np.asarray(lists["truncated"], dtype=np.bool_),
            "time": np.asarray(lists["times"], dtype=np.float64)}


def _shadow_columns(lists: dict[str, list]) -> dict[str, Any]:
    """``shadow_log_prob`` (NaN where the shadow gave none) when a shadow candidate acted on some step, and
    ``shadow_action`` when it acted on every step of the chunk."""
    actions = lists["shadow_actions"]
    if all(action is None for action in actions):
        return {}
    log_probs = np.asarray([math.nan if value is None else value for value in lists["shadow_log_probs"]],
                           dtype=np.float64)
    if any(action is None for action in actions):
        return {"shadow_log_prob": log_probs}
    return {"shadow_log_prob": log_probs, "shadow_action": stack(actions)}


class RunBuffer:
    """The experience of one recorded episode here (implements ``worker.episodes.recording``'s protocol)."""

    __slots__ = ("submit", "chunk_steps", "run", "episode", "policy_version", "resumed_at", "chunk",
                 "pending", "shadow_version", *_FIELDS)

    def __init__(self, submit: Callable[[Chunk], None], chunk_steps: int, run: str, episode: str,
                 policy_version: int | None, resumed_at: int | None, chunk: int = 0) -> None:
        self.submit = submit
        self.chunk_steps = chunk_steps
        self.run, self.episode = run, episode
        self.policy_version, self.resumed_at = policy_version, resumed_at
        self.chunk = chunk
        """The number of the next chunk to publish."""
        self.pending: tuple[int, Any, Any, float | None, float, Shadow | None] | None = None
        """(seq, observation, proposal, log_prob, time, shadow) of the decision whose outcome has not come."""
        self.shadow_version: int | None = None
        """The shadow candidate's version, once one acted on a step of this run."""
        self._clear()

    def _clear(self) -> None:
        self.seqs: list[int] = []
        self.observations: list[Any] = []
        self.proposals: list[Any] = []
        self.log_probs: list[float | None] = []
        self.applied: list[Any] = []
        self.reported: list[bool] = []
        self.rewards: list[float | None] = []
        self.terminated: list[bool] = []
        self.truncated: list[bool] = []
        self.times: list[float] = []
        self.shadow_actions: list[Any] = []
        self.shadow_log_probs: list[float | None] = []

    # -- what the table reports --------------------------------------------------------------------------

    def act(self, seq: int, observation: Any, proposed: Any, log_prob: float | None, reward: float | None,
            applied: Any, now: float, shadow: Shadow | None = None) -> None:
        if self.pending is not None:
            self._complete(reward, applied, False, False)
        self.pending = (seq, observation, proposed, log_prob, now, shadow)
        if len(self.seqs) >= self.chunk_steps:
            self._emit(False, None, None)

    def finish(self, reward: float | None, applied: Any, truncated: bool, final_observation: Any,
               now: float) -> None:
        if self.pending is None and self.chunk == 0:
            return  # no decision was ever recorded (an episode done at its first state)
        if self.pending is not None:
            self._complete(reward, applied, not truncated, truncated)
        self._emit(True, "truncated" if truncated else "done", final_observation)

    def abandon(self, reason: str) -> None:
        if not self.seqs and self.chunk == 0:
            return  # not one completed step: nothing to learn from
        pending, self.pending = self.pending, None
        self._emit(True, reason, None if pending is None else pending[1])

    def export(self) -> bytes:
        """The unpublished steps and the pending decision, for the worker that takes the episode over."""
        lists = self._lists()
        pending = self.pending
        shadow = None if pending is None or pending[5] is None else \
            [pending[5][0], stack([pending[5][1]]), pending[5][2]]
        return pack({"run": self.run, "chunk": self.chunk, "policy_version": self.policy_version,
                     "resumed_at": self.resumed_at, "count": len(lists["seqs"]),
                     "shadow_version": self.shadow_version,
                     "steps": None if not lists["seqs"] else {name: _column(lists[name]) for name in _FIELDS},
                     "pending": None if pending is None else [pending[0], stack([pending[1]]),
                                                              stack([pending[2]]), pending[3], pending[4],
                                                              shadow]})

    # -- internals -----------------------------------------------------------------------------------------

    def _complete(self, reward: float | None, applied: Any, terminated: bool, truncated: bool) -> None:
        assert self.pending is not None
        seq, observation, proposed, log_prob, time, shadow = self.pending
        self.seqs.append(seq)
        self.observations.append(observation)
        self.proposals.append(proposed)
        self.log_probs.append(log_prob)
        self.applied.append(proposed if applied is None else applied)
        self.reported.append(applied is not None)
        self.rewards.append(reward)
        self.terminated.append(terminated)
        self.truncated.append(truncated)
        self.times.append(time)
        if shadow is None:
            self.shadow_actions.append(None)
            self.shadow_log_probs.append(None)
        else:
            self.shadow_version = shadow[0]
            self.shadow_actions.append(shadow[1])
            self.shadow_log_probs.append(shadow[2])
        self.pending = None

    def _lists(self) -> dict[str, list]:
        return {name: getattr(self, name) for name in _FIELDS}

    def _emit(self, final: bool, end: str | None, final_observation: Any) -> None:
        lists = self._lists()
        first = lists["seqs"][0] if lists["seqs"] else (self.pending[0] if self.pending else -1)
        self.submit(Chunk(self.run, self.episode, self.chunk, final, end, self.policy_version,
                          self.resumed_at, first, lists, final_observation, self.shadow_version))
        self.chunk += 1
        self._clear()


def _column(values: list) -> Any:
    """A list of per-step values as one column (None entries kept as a list: log-probs, rewards, shadow)."""
    if any(value is None for value in values):
        return list(values)
    return stack(values)


def adopt_buffer(blob: bytes, submit: Callable[[Chunk], None], chunk_steps: int, episode: str) -> RunBuffer:
    """A RunBuffer continuing what another worker exported; RecordError when the blob is unreadable."""
    obj = unpack(blob)
    try:
        buffer = RunBuffer(submit, chunk_steps, str(obj["run"]), episode, obj["policy_version"],
                           obj["resumed_at"], int(obj["chunk"]))
        count = int(obj["count"])
        buffer.shadow_version = obj.get("shadow_version")
        if obj["steps"] is not None:
            for name in _FIELDS:
                column = obj["steps"][name]
                values = column if isinstance(column, list) and name in _OPTIONAL else unstack(column, count)
                setattr(buffer, name, [_plain_scalar(name, value) for value in values])
        pending = obj["pending"]
        if pending is not None:
            shadow = pending[5]
            buffer.pending = (int(pending[0]), unstack(pending[1], 1)[0], unstack(pending[2], 1)[0],
                              pending[3], float(pending[4]),
                              None if shadow is None else (shadow[0], unstack(shadow[1], 1)[0], shadow[2]))
    except (KeyError, TypeError, ValueError, IndexError) as err:
        raise RecordError(f"hand-off of recorded steps: expected run, chunk, count, steps and pending "
                          f"({err!r})") from None
    return buffer


def _plain_scalar(name: str, value: Any) -> Any:
    """Bookkeeping columns back as Python values (the recorded observations and actions stay numpy)."""
    if name in ("seqs", "reported", "terminated", "truncated", "times", "log_probs", "rewards",
                "shadow_log_probs") \
            and isinstance(value, np.generic):
        return value.item()
    return value
