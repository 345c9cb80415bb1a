"""A loopback TCP proxy in front of the real broker that misbehaves on command, for broker-fault tests.

    with FaultyBroker.in_front_of(amqp_url) as proxy:
        proxy.blackhole()                   # new connections are accepted and never answered
        client_url = proxy.url              # amqp_url with the proxy's host and port
        ...
        proxy.forward()                     # relay bytes both ways (the start mode)
        proxy.stall()                       # stop relaying, keep every socket open
        proxy.cut()                         # close every connection (RST), keep listening

One thread serves the listener and every relayed socket; each command returns once that thread has applied
it, so after ``stall()`` returns not one more byte passes. Every wait is bounded, and ``close()`` closes all
sockets and joins the thread.
"""

from __future__ import annotations

import contextlib
import queue
import selectors
import socket
import struct
import threading
from collections.abc import Callable
from typing import Literal, Self, TypeVar
from urllib.parse import urlsplit, urlunsplit

Mode = Literal["forward", "blackhole", "stall"]
T = TypeVar("T")

COMMAND_TIMEOUT_S = 5.0
"""Longest wait for the proxy thread to apply a command."""
UPSTREAM_CONNECT_TIMEOUT_S = 2.0
SEND_TIMEOUT_S = 2.0
"""A relayed side that takes no bytes for this long is dropped (both sockets closed)."""
CHUNK = 64 * 1024


class FaultyBroker:
    """A TCP proxy on 127.0.0.1 relaying to ``upstream``; see the module docstring.

    Modes apply as follows: ``forward`` relays new and open connections; ``blackhole`` holds new connections
    unanswered and keeps relaying the open ones; ``stall`` holds new connections and stops relaying the open
    ones without closing them. A connection accepted while not forwarding stays unanswered until ``cut()`` or
    ``close()``; one that was relayed resumes when ``forward()`` follows a ``stall()``.
    """

    def __init__(self, upstream: tuple[str, int], mode: Mode = "forward") -> None:
        self.upstream = upstream
        self.mode: Mode = mode
        self.accepted = 0
        """Connections accepted so far, in any mode."""
        self._listener = socket.create_server(("127.0.0.1", 0), backlog=64)
        self._listener.setblocking(False)
        self.port: int = self._listener.getsockname()[1]
        self._selector = selectors.DefaultSelector()
        self._wake_read, self._wake_write = socket.socketpair()
        self._wake_read.setblocking(False)
        self._commands: queue.SimpleQueue[tuple[Callable[[], object], queue.SimpleQueue[object]]] = \
            queue.SimpleQueue()
        self._peers: dict[socket.socket, socket.socket] = {}
        """Each relayed socket -> the other side of its connection (both directions are keys)."""
        self._held: list[socket.socket] = []
        self._closing = False
        self._thread = threading.Thread(target=self._serve, name=f"faulty-broker:{self.port}", daemon=True)
        self.base_url = ""

    @classmethod
    def in_front_of(cls, amqp_url: str, mode: Mode = "forward") -> Self:
        """A started proxy for the broker of ``amqp_url``; its ``url`` is that URL pointing at the proxy."""
        parts = urlsplit(amqp_url)
        proxy = cls((parts.hostname or "127.0.0.1", parts.port or 5672), mode)
        proxy.base_url = amqp_url
        return proxy.start()

    @property
    def url(self) -> str:
        """``base_url`` (credentials, virtual host) with the proxy's host and port."""
        parts = urlsplit(self.base_url or "amqp://guest:guest@127.0.0.1:5672/%2F")
        credentials = parts.netloc.rpartition("@")[0]
        netloc = f"{credentials}@127.0.0.1:{self.port}" if credentials else f"127.0.0.1:{self.port}"
        return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))

    # -- commands (any thread) -------------------------------------------------------------------------

    def start(self) -> Self:
        self._selector.register(self._listener, selectors.EVENT_READ, "accept")
        self._selector.register(self._wake_read, selectors.EVENT_READ, "wake")
        self._thread.start()
        return self

    def forward(self) -> None:
        """Relay bytes both ways, on new connections and on the ones a stall froze."""
        self._call(lambda: self._set_mode("forward"))

    def blackhole(self) -> None:
        """Accept new connections and never answer them (open connections keep being relayed)."""
        self._call(lambda: self._set_mode("blackhole"))

    def stall(self) -> None:
        """Stop relaying on every connection while keeping its sockets open; hold new connections."""
        self._call(lambda: self._set_mode("stall"))

    def cut(self) -> int:
        """Reset every connection, relayed or held; returns how many were cut. The mode stays."""
        return self._call(self._cut_all)

    @property
    def relayed(self) -> int:
        """Connections being relayed (or frozen by a stall) now."""
        return self._call(lambda: len(self._peers) // 2)

    def close(self) -> None:
        """Stop the thread and close every socket (bounded: the thread is joined for a few seconds)."""
        if self._thread.is_alive():
            self._closing = True
            self._wake()
            self._thread.join(COMMAND_TIMEOUT_S)
        self._cut_all()
        for sock in (self._listener, self._wake_read, self._wake_write):
            sock.close()
        self._selector.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _call(self, command: Callable[[], T]) -> T:
        if not self._thread.is_alive():
            raise RuntimeError("the faulty broker is not running")
        answer: queue.SimpleQueue[object] = queue.SimpleQueue()
        self._commands.put((command, answer))
        self._wake()
        try:
            result = answer.get(timeout=COMMAND_TIMEOUT_S)
        except queue.Empty:
            raise TimeoutError(f"the faulty broker did not answer a command within {COMMAND_TIMEOUT_S} s") \
                from None
        if isinstance(result, BaseException):
            raise result
        return result  # type: ignore[return-value]  # what ``command`` returned

    def _wake(self) -> None:
        with contextlib.suppress(OSError):  # closed, or full of wake-ups already: the thread wakes anyway
            self._wake_write.send(b"\0")

    # -- the proxy thread ------------------------------------------------------------------------------

    def _serve(self) -> None:
        while not self._closing:
            for key, _events in self._selector.select(timeout=0.5):
                if key.data == "accept":
                    self._accept()
                elif key.data == "wake":
                    self._run_commands()
                elif isinstance(key.fileobj, socket.socket) and key.fileobj in self._peers:
                    self._relay(key.fileobj)

    def _run_commands(self) -> None:
        try:
            while self._wake_read.recv(4096):
                pass
        except BlockingIOError:
            pass
        while True:
            try:
                command, answer = self._commands.get_nowait()
            except queue.Empty:
                return
            try:
                answer.put(command())
            except Exception as err:  # noqa: BLE001 - handed to the caller's thread
                answer.put(err)

    def _set_mode(self, mode: Mode) -> None:
        self.mode = mode
        for sock in self._peers:
            registered = self._is_registered(sock)
            if mode == "stall" and registered:
                self._selector.unregister(sock)
            elif mode != "stall" and not registered:
                self._selector.register(sock, selectors.EVENT_READ, "relay")

    def _is_registered(self, sock: socket.socket) -> bool:
        try:
            self._selector.get_key(sock)
        except KeyError:
            return False
        return True

    def _accept(self) -> None:
        try:
            client, _address = self._listener.accept()
        except BlockingIOError:
            return
        self.accepted += 1
        if self.mode != "forward":
            self._held.append(client)
            return
        try:
            upstream = socket.create_connection(self.upstream, timeout=UPSTREAM_CONNECT_TIMEOUT_S)
        except OSError:
            _reset(client)
            return
        for sock in (client, upstream):
            sock.settimeout(SEND_TIMEOUT_S)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._peers[client], self._peers[upstream] = upstream, client
        for sock in (client, upstream):
            self._selector.register(sock, selectors.EVENT_READ, "relay")

    def _relay(self, sock: socket.socket) -> None:
        peer = self._peers[sock]
        try:
            data = sock.recv(CHUNK)
            if data:
                peer.sendall(data)
                return
        except OSError:
            pass
        self._drop(sock)

    def _drop(self, sock: socket.socket) -> None:
        """Reset both sides of ``sock``'s connection (nothing if it was dropped already)."""
        peer = self._peers.pop(sock, None)
        if peer is None:
            return
        del self._peers[peer]
        for one in (sock, peer):
            if self._is_registered(one):
                self._selector.unregister(one)
            _reset(one)

    def _cut_all(self) -> int:
        count = len(self._peers) // 2 + len(self._held)
        for sock in list(self._peers):
            self._drop(sock)
        for sock in self._held:
            _reset(sock)
        self._held.clear()
        return count


def _reset(sock: socket.socket) -> None:
    """Close with RST rather than FIN: the peer sees the connection broken, as on a real network failure."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()
