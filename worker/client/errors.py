"""Exceptions of the producer-side client: one per reply error code, plus connection and timeout failures.

Catch ``MazeClientError`` for everything, ``ReplyError`` for errors the worker answered with, or a specific
subclass (``OutOfOrder``, ``Overloaded``, ...) to react to one code.
"""

from typing import Any

from worker.errors import WorkerError
from worker.wire.protocol import ErrorCode
from worker.wire.replies import Reply


class MazeClientError(WorkerError):
    """Base of every error the client raises."""


class ConnectionFailed(MazeClientError):
    """The broker could not be reached or refused the login (the message never holds the password)."""


class ConnectionLost(MazeClientError):
    """The connection or channel broke while in use; create a new client (its reply queue is gone)."""


class JobClientError(MazeClientError):
    """``JobClient``: the broker could not be reached, refused a message, or no answer came in time."""


class TopologyMissing(MazeClientError):
    """``<prefix>.states`` does not exist: no maze-worker has declared its topology under this prefix."""


class Unroutable(MazeClientError):
    """The broker returned a state because no shard queue was bound to the states exchange."""

    def __init__(self, message: str, correlation_ids: list[str]) -> None:
        super().__init__(message)
        self.correlation_ids = correlation_ids


class ClientTimeout(MazeClientError, TimeoutError):
    """No reply arrived in time; ``missing`` lists the correlation ids, ``received`` the replies that did."""

    def __init__(self, message: str, missing: list[str], received: dict[str, Reply] | None = None) -> None:
        super().__init__(message)
        self.missing = missing
        self.received = received or {}


class ReplyError(MazeClientError):
    """The worker answered with an error; ``code`` and ``message`` come from the reply."""

    code: ErrorCode = ErrorCode.INTERNAL

    def __init__(self, message: str, episode: str | None = None, seq: int | None = None,
                 reply: Reply | None = None) -> None:
        super().__init__(f"{self.code.value}: {message}")
        self.message = message
        self.episode = episode
        self.seq = seq
        self.reply = reply


class BadMessage(ReplyError):
    """The worker could not use the state (a field is missing or mistyped, or the state does not fit)."""

    code = ErrorCode.BAD_MESSAGE


class OutOfOrder(ReplyError):
    """``seq`` skipped ahead of the episode's next step."""

    code = ErrorCode.OUT_OF_ORDER


class UnknownEpisode(ReplyError):
    """``seq`` > 0 for an episode the worker does not hold (never started, closed, or evicted when idle)."""

    code = ErrorCode.UNKNOWN_EPISODE


class Overloaded(ReplyError):
    """The worker holds its maximum of open episodes; retry the episode's first state later."""

    code = ErrorCode.OVERLOADED


class InternalError(ReplyError):
    """A wrapper or the policy failed inside the worker (or its reply was undecodable)."""

    code = ErrorCode.INTERNAL


class EpisodeLost(ReplyError):
    """The worker lost the episode's state (e.g. a restart); start the episode again."""

    code = ErrorCode.EPISODE_LOST


REPLY_ERRORS: dict[ErrorCode, type[ReplyError]] = {
    cls.code: cls for cls in (BadMessage, OutOfOrder, UnknownEpisode, Overloaded, InternalError, EpisodeLost)
}


def raise_for_error(reply: Reply) -> Any:
    """The reply's action, or raise the ReplyError subclass for its error code."""
    if reply.error is None:
        return reply.action
    raise REPLY_ERRORS[reply.error.code](reply.error.message, reply.episode, reply.seq, reply)
