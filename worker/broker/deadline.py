"""Deadlines for pika's blocking calls, which otherwise wait for the broker's answer without a limit.

A ``BlockingConnection`` waits for an answer (a declare, a cancel, a publisher confirm, the close handshake,
the flush of its output) until pika's heartbeat checker gives up on a silent broker, which takes between once
and twice the heartbeat plus 5 s, and without any limit while the broker blocks the connection (it still
sends heartbeats then) or when heartbeats are off. ``deadline`` arms a timer on the connection's own I/O
loop, which pika runs while it waits; when it fires, the connection is aborted the way pika's heartbeat
checker aborts a dead one (the socket is closed without a goodbye) and the waiting call raises ``NoAnswer``.

Both pika edges use it, the services' (``worker.broker``) and the producers' (``worker.client``); it imports
nothing but pika.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pika
import pika.exceptions


class NoAnswer(pika.exceptions.AMQPConnectionError):
    """The broker did not answer ``action`` within ``seconds``; the connection was aborted (now closed)."""

    def __init__(self, action: str, seconds: float) -> None:
        super().__init__(f"the broker did not answer {action} within {seconds:g} s")
        self.action = action
        self.seconds = seconds


@contextmanager
def deadline(connection: pika.BlockingConnection, seconds: float, action: str,
             on_slow: Callable[[], None] | None = None, slow_after: float | None = None) -> Iterator[None]:
    """Abort ``connection`` when the blocking calls inside take longer than ``seconds``; they then raise
    ``NoAnswer`` naming ``action``. ``on_slow()`` runs once if they are still waiting after ``slow_after``
    seconds (to log what the caller waits for)."""
    if not connection.is_open:  # pika raises ConnectionWrongStateError for any call: nothing to bound
        yield
        return
    # The private parts pika's own heartbeat checker uses: the I/O loop that BlockingConnection runs while
    # it waits, and the abort of the stack with a given error.
    impl = connection._impl
    loop = impl.ioloop

    def expire() -> None:
        if not impl.is_closed:
            impl._terminate_stream(NoAnswer(action, seconds))

    timers = [loop.call_later(seconds, expire)]
    if on_slow is not None and slow_after is not None and slow_after < seconds:
        timers.append(loop.call_later(slow_after, on_slow))
    try:
        yield
    finally:
        for timer in timers:  # harmless once the connection (and with it the loop) is closed
            loop.remove_timeout(timer)


def close_within(connection: pika.BlockingConnection, seconds: float, action: str = "the close",
                 on_slow: Callable[[], None] | None = None,
                 slow_after: float | None = None) -> Exception | None:
    """Close ``connection`` (its channels first), giving the broker ``seconds`` to answer; after that the
    socket is closed unanswered. Never raises: returns what went wrong, None for a clean close."""
    if not connection.is_open:
        return None
    try:
        with deadline(connection, seconds, action, on_slow, slow_after):
            connection.close()
    except Exception as err:  # noqa: BLE001 - closing a broken connection fails in many ways, all harmless
        return err
    return None
