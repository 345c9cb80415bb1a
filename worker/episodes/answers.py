"""The answers the table gives besides an action: refusals by the sequence rules, final and resumed replies.

Each is an ``Answer``: the encoded reply (``worker.wire.replies`` does the encoding) and its error code.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from worker.episodes.closing import CloseReason, Remembered
from worker.settings import EpisodeSettings
from worker.wire.protocol import ErrorCode, StateMessage
from worker.wire.replies import (
    POLICY_VERSION_FIELD,
    RESUMED_FIELD,
    WORKER_FIELD,
    Reply,
    encode_error_reply,
    encode_reply,
)


class Answer(NamedTuple):
    """The encoded reply to one state, and its error code (None for an action)."""

    body: bytes
    code: ErrorCode | None


def error_answer(episode: str | None, seq: int | None, code: ErrorCode, message: str) -> Answer:
    """An encoded error reply."""
    return Answer(encode_error_reply(episode, seq, code, message), code)


def final_reply(message: StateMessage, action: Any, policy_version: int | None, worker: str | None,
                resumed: bool = False) -> bytes:
    """A reply built through ``Reply``: the done reply (action nil), or the first reply of a resumed
    episode."""
    extra: dict[str, Any] = {POLICY_VERSION_FIELD: policy_version}
    if resumed:
        extra[RESUMED_FIELD] = True
    if worker is not None:
        extra[WORKER_FIELD] = worker
    return encode_reply(Reply(message.episode, message.seq, action, extra=extra))


def lost_answer(message: StateMessage) -> Answer:
    return error_answer(message.episode, message.seq, ErrorCode.EPISODE_LOST,
                        "episode: its state was lost with a crashed worker; start a new episode with seq 0")


def overloaded_answer(message: StateMessage, max_open: int) -> Answer:
    return error_answer(message.episode, message.seq, ErrorCode.OVERLOADED,
                        f"episode: the worker holds its maximum of {max_open} open episodes; retry later or "
                        "on another worker")


def out_of_order_answer(message: StateMessage, last_seq: int, replay_window: int) -> Answer:
    """A seq that is neither the next step nor one of the replies kept."""
    expected = last_seq + 1
    text = f"seq: expected {expected} (the next step of the episode), got {message.seq}"
    if message.seq < expected:
        text += f", older than the last {replay_window} replies kept"
    return error_answer(message.episode, message.seq, ErrorCode.OUT_OF_ORDER, text)


def unknown_answer(message: StateMessage, closed: Remembered | None, settings: EpisodeSettings) -> Answer:
    """seq > 0 of an episode not held: the final reply again for a redelivered done state, else why not."""
    if closed is not None:
        if closed.reply is not None and message.seq == closed.last_seq:
            return Answer(closed.reply, None)
        why = {CloseReason.DONE: f"finished at seq {closed.last_seq}",
               CloseReason.IDLE: f"closed after {settings.idle_timeout_s:g} s without a state",
               CloseReason.ERROR: "closed after an internal error",
               CloseReason.SHUTDOWN: "closed when the worker shut down"}[closed.reason]
        detail = f"the episode {why}"
    else:
        detail = "the worker holds no such episode (start episodes with seq 0)"
    return error_answer(message.episode, message.seq, ErrorCode.UNKNOWN_EPISODE, f"episode: {detail}")


def brief(err: BaseException) -> str:
    """An exception as ``Type: message``, cut to 300 characters (error replies and logs)."""
    text = f"{type(err).__name__}: {err}"
    return text if len(text) <= 300 else text[:297] + "..."
