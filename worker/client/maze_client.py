"""The producer-side client: publish states to a maze-worker and receive its actions.

``MazeClient.act`` is the simple blocking call. ``send`` with ``poll`` or ``wait`` lets one thread keep many
episodes in flight at once, and ``client.episode()`` tracks an episode's ``seq`` for you::

    with MazeClient(prefix="maze") as client:
        episode = client.episode()
        action = episode.step(first_state)                # seq 0, no reward yet
        action = episode.step(next_state, reward=1.0)     # seq 1, reward for the previous action
        episode.close(final_state, reward=1.0)            # done=True; the worker closes the episode

A client owns one AMQP connection and is not thread-safe: use one client per thread. See docs/protocol.md.

Nothing blocks for longer than the client's ``timeout`` (10 s unless given): connecting raises
``ConnectionFailed`` when the broker does not answer in time, a call whose answer does not come is given up
with ``ClientTimeout`` (no reply) or ``ConnectionLost`` (the broker itself went silent; the connection is
dropped), and ``close`` returns after at most ``min(timeout, 5 s)`` whatever the broker does.
"""

import contextlib
import itertools
import time
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from typing import Any

import pika
import pika.exceptions
from pika.adapters.blocking_connection import BlockingChannel

from worker.broker.deadline import NoAnswer, close_within, deadline
from worker.client import connection
from worker.client.errors import (
    ClientTimeout,
    ConnectionFailed,
    ConnectionLost,
    MazeClientError,
    TopologyMissing,
    Unroutable,
    raise_for_error,
)
from worker.wire import topology
from worker.wire.protocol import (
    CONTENT_TYPE,
    MAX_EPISODE_ID_LENGTH,
    PROTOCOL_VERSION,
    DecodeError,
    ErrorCode,
    StateMessage,
    encode_state,
)
from worker.wire.replies import ErrorInfo, Reply, decode_reply

PERSISTENT = 2


@dataclass(frozen=True)
class _Sent:
    episode: str
    seq: int


class MazeClient:
    """A connection to the broker for publishing states to ``<prefix>.states`` and collecting the replies.

    The client never declares the worker's topology; it checks that ``<prefix>.states`` exists and fails with
    ``TopologyMissing`` otherwise. Replies come to an exclusive, server-named queue of this client.

    ``timeout`` bounds every blocking call: the constructor gives up after about ``timeout`` seconds with
    ``ConnectionFailed`` (a broker down, refusing us, or accepting TCP but never answering), ``act``, ``wait``
    and ``poll`` wait at most their own timeout (default ``timeout``) for replies, and a broker that stops
    answering altogether is left after ``timeout`` more seconds with ``ConnectionLost``; ``close`` returns
    within ``min(timeout, 5 s)``.
    """

    def __init__(self, url: str | None = None, prefix: str = topology.DEFAULT_PREFIX, timeout: float = 10.0,
                 *, connection_name: str | None = None) -> None:
        if not isinstance(timeout, int | float) or isinstance(timeout, bool) or not timeout > 0:
            raise ValueError(f"timeout: expected a positive number of seconds, got {timeout!r}")
        self.url = topology.amqp_url(url)
        self.prefix = prefix
        self.timeout = float(timeout)
        self.exchange = topology.states_exchange(prefix)
        self._pending: dict[str, _Sent] = {}
        self._ready: dict[str, Reply] = {}
        self._returned: dict[str, str] = {}
        self._ids = itertools.count()
        self._id_base = uuid.uuid4().hex[:12]
        self.stale_replies = 0
        """Replies that arrived after their state was given up (timed out or forgotten)."""
        self.resumed_replies = 0
        """Replies flagged ``resumed``: the worker continued an episode whose earlier state was lost with a
        crashed worker, on a fresh wrapper stack (see docs/protocol.md)."""
        self.last_reply: Reply | None = None
        """The reply ``act`` got last (its ``resumed`` and ``worker`` say more than the action)."""
        started = time.monotonic()
        self._connection = self._connect(connection_name or f"maze-client {self._id_base}")
        try:
            # What connecting left of the budget, but never so little that a healthy broker cannot make it.
            budget = max(self.timeout - (time.monotonic() - started), self.timeout / 4)
            self._channel = self._open_channel(budget)
        except BaseException:
            self.close()
            raise

    # ---------------------------------------------------------------------------------------------- set-up

    def _connect(self, connection_name: str) -> pika.BlockingConnection:
        try:
            parameters = connection.parameters(self.url, connection_name, self.timeout)
        except ValueError as err:  # from None: the URL parser's message may quote the password
            raise ConnectionFailed(f"url: expected an amqp:// or amqps:// URL, got "
                                   f"{topology.mask_url(self.url)} ({self._scrub(str(err))})") from None
        try:
            return pika.BlockingConnection(parameters)
        except connection.CONNECT_ERRORS as err:
            raise ConnectionFailed(f"cannot connect to the broker at {topology.mask_url(self.url)} within "
                                   f"{self.timeout:g} s: {self._describe(err)}") from err

    def _open_channel(self, budget: float) -> BlockingChannel:
        """Check the states exchange, declare the reply queue and consume it, within ``budget`` seconds."""
        action = f"setting up the client on {topology.mask_url(self.url)}"
        try:
            with deadline(self._connection, budget, action):
                self._check_exchange()
                channel = self._connection.channel()
                self._reply_queue = channel.queue_declare("", exclusive=True, auto_delete=True).method.queue
                channel.basic_consume(self._reply_queue, self._on_reply, auto_ack=True)
                channel.add_on_return_callback(self._on_return)
                return channel
        except connection.CONNECT_ERRORS as err:
            raise ConnectionFailed(f"{action}: {self._describe(err)}") from err

    def _check_exchange(self) -> None:
        """Raise TopologyMissing unless ``<prefix>.states`` exists (on a channel of its own: a failed passive
        declare closes it)."""
        channel = self._connection.channel()
        try:
            channel.exchange_declare(self.exchange, passive=True)
        except pika.exceptions.ChannelClosedByBroker as err:
            if err.reply_code == 404:
                raise TopologyMissing(f"no maze-worker has declared {self.exchange}; start maze-worker first "
                                      f"(with broker.prefix={self.prefix})") from err
            raise
        channel.close()

    def _scrub(self, text: str) -> str:
        return connection.scrub(text, self.url)

    def _describe(self, err: BaseException) -> str:
        return connection.describe(err, self.url)

    @contextlib.contextmanager
    def _translated(self, action: str, limit: float) -> Iterator[None]:
        """Turn pika's exceptions into the client's own, naming what was being done; a broker that does not
        answer within ``limit`` seconds is given up (the connection dropped, ConnectionLost raised)."""
        try:
            with deadline(self._connection, limit, action):
                yield
        except pika.exceptions.ChannelClosedByBroker as err:
            if err.reply_code == 404:
                raise TopologyMissing(f"{action}: {self.exchange} no longer exists; is maze-worker running "
                                      f"with broker.prefix={self.prefix}?") from err
            raise ConnectionLost(f"{action}: the broker closed the channel ({self._describe(err)})") from err
        except NoAnswer as err:
            raise ConnectionLost(f"{action}: no answer from the broker within {err.seconds:g} s; the "
                                 f"connection to {topology.mask_url(self.url)} was dropped, create a new "
                                 f"client") from err
        except connection.CONNECT_ERRORS as err:
            raise ConnectionLost(f"{action}: lost the connection to {topology.mask_url(self.url)} "
                                 f"({self._describe(err)}); create a new client") from err

    def __repr__(self) -> str:
        url = topology.mask_url(self.url)
        return f"MazeClient(url={url!r}, prefix={self.prefix!r}, timeout={self.timeout})"

    def __enter__(self) -> "MazeClient":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the connection (the reply queue goes with it); replies still on their way are lost.

        Returns within ``min(timeout, 5 s)``: a broker that does not answer the close by then is left, its
        socket closed unanswered. Never raises; closing twice is harmless.
        """
        opened = getattr(self, "_connection", None)
        if opened is not None:
            close_within(opened, min(self.timeout, connection.CLOSE_TIMEOUT_S))

    @property
    def is_open(self) -> bool:
        return self._connection.is_open

    @property
    def pending(self) -> int:
        """States sent whose replies have not arrived yet."""
        return len(self._pending)

    # ------------------------------------------------------------------------------------------- callbacks

    def _on_reply(self, _channel: Any, _method: Any, properties: pika.BasicProperties, body: bytes) -> None:
        sent = self._pending.pop(properties.correlation_id, None)
        if sent is None:
            self.stale_replies += 1
            return
        try:
            reply = decode_reply(body)
        except DecodeError as err:
            reply = Reply(sent.episode, sent.seq, None,
                          ErrorInfo(ErrorCode.INTERNAL, f"the worker sent an undecodable reply: {err}"))
        if reply.episode is None or reply.seq is None:  # a bad_message reply that could not read them
            reply = replace(reply, episode=sent.episode, seq=sent.seq)
        if reply.resumed:
            self.resumed_replies += 1
        self._ready[properties.correlation_id] = reply

    def _on_return(self, _channel: Any, method: Any, properties: pika.BasicProperties, _body: bytes) -> None:
        if self._pending.pop(properties.correlation_id, None) is not None:
            self._returned[properties.correlation_id] = f"{method.reply_code} {method.reply_text}"

    # ---------------------------------------------------------------------------------------------- sending

    def send(self, episode: str, seq: int, state: Any, reward: float | None = None, done: bool = False,
             info: dict | None = None, actor: tuple[int | str, int] | None = None, *, truncated: bool = False,
             applied_action: Any = None) -> str:
        """Publish one state without waiting; returns its correlation id for ``wait`` (or use ``poll``).
        ``applied_action`` reports the action applied after the previous state, ``truncated`` (with
        ``done``) a time limit (docs/protocol.md)."""
        if not isinstance(episode, str) or not 0 < len(episode) <= MAX_EPISODE_ID_LENGTH \
                or len(episode.encode()) > 255:
            raise ValueError(f"episode: expected a non-empty string of at most {MAX_EPISODE_ID_LENGTH} "
                             f"characters (and 255 UTF-8 bytes), got {episode!r}")
        if type(seq) is not int or seq < 0:
            raise ValueError(f"seq: expected a non-negative integer, got {seq!r}")
        body = encode_state(StateMessage(PROTOCOL_VERSION, episode, seq, state, reward, done, info, actor,
                                         truncated, applied_action))
        correlation_id = f"{self._id_base}-{next(self._ids)}"
        properties = pika.BasicProperties(content_type=CONTENT_TYPE, delivery_mode=PERSISTENT,
                                          reply_to=self._reply_queue, correlation_id=correlation_id)
        self._pending[correlation_id] = _Sent(episode, seq)
        try:
            with self._translated(f"publishing episode {episode} seq {seq}", self.timeout):
                # mandatory: if no shard queue is bound the broker returns the state instead of dropping it
                self._channel.basic_publish(self.exchange, episode, body, properties, mandatory=True)
        except MazeClientError:
            self._pending.pop(correlation_id, None)
            raise
        return correlation_id

    def forget(self, correlation_id: str) -> None:
        """Stop waiting for a reply; if it still arrives it is dropped (counted in ``stale_replies``)."""
        self._pending.pop(correlation_id, None)
        self._ready.pop(correlation_id, None)
        self._returned.pop(correlation_id, None)

    # ---------------------------------------------------------------------------------------------- waiting

    def _process(self, finished: Any, timeout: float) -> bool:
        """Handle broker events until ``finished()`` or the timeout; events are handled at least once."""
        until = time.monotonic() + timeout
        while True:
            if finished():
                return True
            remaining = until - time.monotonic()
            with self._translated("waiting for replies", max(0.0, remaining) + self.timeout):
                self._connection.process_data_events(time_limit=max(0.0, remaining))
            if remaining <= 0:
                return bool(finished())

    def _raise_returned(self, correlation_ids: Iterable[str]) -> None:
        returned = {cid: self._returned.pop(cid) for cid in list(correlation_ids) if cid in self._returned}
        if returned:
            reason = next(iter(returned.values()))
            raise Unroutable(f"the broker could not route {len(returned)} state(s) from {self.exchange} to "
                             f"a shard queue ({reason}); is maze-worker running with "
                             f"broker.prefix={self.prefix}?",
                             list(returned))

    def poll(self, timeout: float = 0.0) -> list[Reply]:
        """Replies that have arrived, waiting up to ``timeout`` seconds for at least one.

        Returns every reply received so far (in arrival order) to states sent with ``send``, from any
        episode; match them by ``episode`` and ``seq``. Error replies are returned, not raised (see
        ``raise_for_error``).
        """
        self._process(lambda: self._ready or self._returned, timeout)
        self._raise_returned(list(self._returned))
        replies = list(self._ready.values())
        self._ready.clear()
        return replies

    def wait(self, correlation_ids: Iterable[str], timeout: float | None = None) -> dict[str, Reply]:
        """Wait for the replies to the given states; raises ClientTimeout (holding those that did arrive).

        Error replies are returned, not raised. After a timeout the missing replies can still be waited for.
        """
        wanted = list(correlation_ids)
        unknown = [cid for cid in wanted if cid not in self._pending and cid not in self._ready
                   and cid not in self._returned]
        if unknown:
            raise ValueError(f"correlation_ids: expected ids returned by send() and not yet collected, "
                             f"got {unknown[:3]}")
        limit = self.timeout if timeout is None else timeout
        outstanding = [cid for cid in wanted if cid not in self._ready]

        def finished() -> bool:
            while outstanding and outstanding[-1] in self._ready:
                outstanding.pop()
            return not outstanding or any(cid in self._returned for cid in outstanding)

        self._process(finished, limit)
        self._raise_returned(wanted)
        received = {cid: self._ready.pop(cid) for cid in wanted if cid in self._ready}
        if len(received) < len(wanted):
            missing = [cid for cid in wanted if cid not in received]
            sent = self._pending.get(missing[0])
            example = f" (e.g. episode {sent.episode} seq {sent.seq})" if sent else ""
            raise ClientTimeout(f"no reply within {limit:g} s for {len(missing)} of {len(wanted)} state(s)"
                                f"{example}; is maze-worker running and consuming {self.exchange}?",
                                missing, received)
        return received

    def sleep(self, seconds: float) -> None:
        """Pause while keeping the connection alive (heartbeats are only answered while the client runs)."""
        with self._translated("sleeping", seconds + self.timeout):
            self._connection.sleep(seconds)

    def act(self, episode: str, seq: int, state: Any, reward: float | None = None, done: bool = False,
            info: dict | None = None, actor: tuple[int | str, int] | None = None,
            timeout: float | None = None, *, truncated: bool = False, applied_action: Any = None) -> Any:
        """Send one state and wait for its action; error replies raise the matching ReplyError subclass.

        After a ClientTimeout the same (episode, seq) may be sent again: the worker answers a repeated state
        with the reply it already computed instead of stepping twice.
        """
        correlation_id = self.send(episode, seq, state, reward, done, info, actor, truncated=truncated,
                                   applied_action=applied_action)
        try:
            reply = self.wait([correlation_id], timeout)[correlation_id]
        except MazeClientError:
            self.forget(correlation_id)
            raise
        self.last_reply = reply
        return raise_for_error(reply)

    def episode(self, episode_id: str | None = None) -> "Episode":
        """A helper that numbers the steps of one episode (a random id unless ``episode_id`` is given)."""
        return Episode(self, episode_id or uuid.uuid4().hex)


class Episode:
    """One episode driven step by step through a client; ``seq`` advances after each successful step."""

    def __init__(self, client: MazeClient, episode_id: str) -> None:
        self.client = client
        self.id = episode_id
        self.seq = 0
        """The seq the next step will carry."""
        self.closed = False
        self.resumed_at: int | None = None
        """The last seq at which the worker resumed this episode after a crash (its wrapper stack started
        afresh there), or None."""
        self.policy_version: int | None = None
        """The published policy version acting for this episode (from its last reply), or None."""

    def step(self, state: Any, reward: float | None = None, done: bool = False, info: dict | None = None,
             actor: tuple[int | str, int] | None = None, timeout: float | None = None, *,
             truncated: bool = False, applied_action: Any = None) -> Any:
        """Send the next state (``reward`` and ``applied_action`` are for the previous action); the action.

        On an error reply or a timeout ``seq`` stays, so the same step can be retried.
        """
        if self.closed:
            raise RuntimeError(f"episode {self.id} is closed; start a new one with client.episode()")
        action = self.client.act(self.id, self.seq, state, reward, done, info, actor, timeout,
                                 truncated=truncated, applied_action=applied_action)
        if self.client.last_reply is not None:
            if self.client.last_reply.resumed:
                self.resumed_at = self.seq
            self.policy_version = self.client.last_reply.policy_version
        self.seq += 1
        self.closed = done
        return action

    def close(self, final_state: Any, reward: float | None = None, info: dict | None = None,
              timeout: float | None = None, *, truncated: bool = False, applied_action: Any = None) -> None:
        """Send the final state with done=True; the worker ends the episode and flushes its statistics."""
        self.step(final_state, reward, done=True, info=info, timeout=timeout, truncated=truncated,
                  applied_action=applied_action)

    def __repr__(self) -> str:
        return f"Episode(id={self.id!r}, seq={self.seq}, closed={self.closed})"
