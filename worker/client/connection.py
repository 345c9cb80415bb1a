"""What the producer-side clients (``MazeClient``, ``JobClient``) share: bounded connecting, safe messages.

``parameters`` makes one connection attempt of at most ``timeout`` seconds (TCP, TLS and the AMQP handshake);
everything pika raises when it fails is one of ``CONNECT_ERRORS``. Calls on an open connection are bounded
with ``worker.broker.deadline`` (pika alone waits for the broker's answers without a limit). Messages show
the URL with its password masked.
"""

from __future__ import annotations

import contextlib
from urllib.parse import unquote, urlsplit

import pika
import pika.exceptions
from pika.adapters.utils.connection_workflow import AMQPConnectorException, AMQPConnectorStackTimeout

CONNECT_ERRORS = (pika.exceptions.AMQPError, AMQPConnectorException, OSError)
"""Everything pika raises when a connection cannot be opened: AMQP errors, its connection workflow's own
(``AMQPConnectorStackTimeout`` when a broker accepts TCP but never completes the handshake), socket errors."""
CLOSE_TIMEOUT_S = 5.0
"""Longest wait for the broker to answer a client's close (less when the client's timeout is shorter)."""


def parameters(url: str, connection_name: str, timeout: float) -> pika.URLParameters:
    """pika parameters for ``url``: one attempt of at most ``timeout`` seconds; raises ValueError for a URL
    pika cannot read."""
    params = pika.URLParameters(url)
    params.client_properties = {"connection_name": connection_name}
    params.connection_attempts = 1
    params.socket_timeout = params.stack_timeout = timeout
    return params


def scrub(text: str, url: str) -> str:
    """``text`` without the password of ``url`` (pika's errors normally hold none, but be certain)."""
    with contextlib.suppress(ValueError):
        password = urlsplit(url).password
        if password:
            text = text.replace(password, "****").replace(unquote(password), "****")
    return text


def describe(err: BaseException, url: str) -> str:
    """``err`` as ``Type: detail`` for a message, the password masked; a handshake timeout explained."""
    if isinstance(err, AMQPConnectorStackTimeout):
        return ("no AMQP handshake in time: the broker accepted the connection but did not answer (hung or "
                "overloaded, or a proxy in between is broken)")
    detail = scrub(str(err), url)
    return f"{type(err).__name__}: {detail}" if detail else type(err).__name__
