"""What both of the worker's transports share: one blocking connection with one channel, its errors.

pika's exceptions never leave the transports: ``translated_errors`` turns them into the errors below, so the
services reason about ``BrokerConnectionLost`` and ``PluginMissing`` rather than about AMQP reply codes.
``BrokerLink`` opens and closes the connection and declares a topology;
``worker.broker.agent_transport.Transport`` (the agent worker) and
``worker.broker.job_transport.JobTransport`` (the job worker) build on it.

Nothing waits for the broker without a limit: connecting gives up after ``connect_timeout_s``, every call
that waits for an answer after ``ANSWER_TIMEOUT_S`` (the connection is dropped then, see
``worker.broker.deadline``), closing after ``CLOSE_TIMEOUT_S``; a wait longer than ``SLOW_NOTICE_S`` is logged
with what it waits for.
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import Iterator
from contextlib import contextmanager

import pika
import pika.exceptions
from pika.adapters.blocking_connection import BlockingChannel
from pika.adapters.utils.connection_workflow import AMQPConnectorException, AMQPConnectorStackTimeout

from worker.broker.deadline import NoAnswer, close_within, deadline
from worker.errors import WorkerError
from worker.settings import BrokerSettings
from worker.wire.declarations import Topology
from worker.wire.topology import mask_url

logger = logging.getLogger(__name__)

CONNECT_TIMEOUT_S = 10.0
"""Longest wait for a new connection (TCP, TLS, AMQP handshake): two ``broker.heartbeat_s``, the silence
after which an open connection counts as dead too, but at most this (and this with heartbeats off)."""
ANSWER_TIMEOUT_S = 10.0
"""Longest wait for the broker's answer to one call (a declare, a cancel, a confirm, writing out replies);
then the connection is dropped and the call raises BrokerConnectionLost, as when the heartbeats stop."""
CLOSE_TIMEOUT_S = 5.0
"""Longest wait for the broker to answer the close; then the socket is closed unanswered."""
SLOW_NOTICE_S = 2.0
"""A wait for the broker longer than this is logged, naming what is awaited."""
BLOCKED_TIMEOUT_S = 60.0
"""A connection the broker keeps blocked (memory or disk alarm) this long is dropped and opened again."""

PLUGIN_HINT = ("the broker lacks the consistent-hash exchange; enable it with "
               "`rabbitmq-plugins enable rabbitmq_consistent_hash_exchange` and start the worker again")


class TransportError(WorkerError):
    """Base of the errors the transport raises; pika's own exceptions never leave this module."""


class BrokerUnreachable(TransportError):
    """No connection could be opened (broker down, wrong host or port); worth retrying."""


class BrokerConnectionLost(TransportError):
    """An open connection or channel broke (broker restart, connection closed by an operator, network)."""


class AccessRefused(TransportError):
    """The broker refused the credentials or the virtual host; retrying will not help."""


class PluginMissing(TransportError):
    """The ``x-consistent-hash`` exchange type is unknown to the broker."""


class TopologyConflict(TransportError):
    """An exchange or queue of this prefix exists with other arguments (e.g. a classic queue of that name)."""


def connection_parameters(settings: BrokerSettings, connection_name: str) -> pika.URLParameters:
    """pika parameters for ``settings.url``, with TLS set up for ``amqps://``, a name the broker shows, and
    bounded waits: one attempt of at most ``connect_timeout_s(settings)``, ``BLOCKED_TIMEOUT_S`` blocked."""
    params = pika.URLParameters(settings.url)
    params.heartbeat = settings.heartbeat_s
    params.connection_attempts = 1  # the services retry themselves, with backoff and a log line each time
    params.socket_timeout = params.stack_timeout = connect_timeout_s(settings)
    params.blocked_connection_timeout = BLOCKED_TIMEOUT_S
    params.client_properties = {"connection_name": connection_name, "product": "maze-worker"}
    if settings.url.lower().startswith("amqps://"):
        tls = settings.tls
        context = ssl.create_default_context(cafile=tls.ca_file)
        if tls.cert_file:
            context.load_cert_chain(tls.cert_file, tls.key_file)
        if not tls.verify:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        # pika leaves server_hostname unset, which breaks host name checking and SNI: name the host.
        params.ssl_options = pika.SSLOptions(context, server_hostname=params.host)
    return params


def connect_timeout_s(settings: BrokerSettings) -> float:
    """How long a connection attempt may take; see ``CONNECT_TIMEOUT_S``."""
    if settings.heartbeat_s > 0:
        return min(CONNECT_TIMEOUT_S, 2.0 * settings.heartbeat_s)
    return CONNECT_TIMEOUT_S


@contextmanager
def translated_errors(action: str) -> Iterator[None]:
    """Turn pika's exceptions raised during ``action`` into this module's; what is worth a retry becomes
    BrokerConnectionLost (``BrokerLink.connect`` raises BrokerUnreachable instead)."""
    try:
        yield
    except NoAnswer as err:
        raise BrokerConnectionLost(f"{action}: no answer from the broker within {err.seconds:g} s; the "
                                   f"connection was dropped") from err
    except AMQPConnectorStackTimeout as err:
        raise BrokerConnectionLost(f"{action}: the connection was not set up in time (TCP, TLS and the AMQP "
                             f"handshake); the broker may be hung or overloaded, or a proxy in between "
                             f"broken") from err
    except AMQPConnectorException as err:  # pika's connection workflow; most of it arrives unwrapped
        raise BrokerConnectionLost(f"{action}: {err!r}") from err
    except (pika.exceptions.AuthenticationError, pika.exceptions.ProbableAuthenticationError) as err:
        raise AccessRefused(f"{action}: the broker refused the credentials ({err})") from err
    except pika.exceptions.ProbableAccessDeniedError as err:
        raise AccessRefused(f"{action}: access to the virtual host was denied ({err})") from err
    except pika.exceptions.ConnectionClosedByBroker as err:
        if err.reply_code == 503 and "exchange type" in str(err.reply_text):
            raise PluginMissing(PLUGIN_HINT) from err
        if err.reply_code in (403, 530):
            raise AccessRefused(f"{action}: {err.reply_text}") from err
        raise BrokerConnectionLost(f"{action}: the broker closed the connection "
                             f"({err.reply_code} {err.reply_text})") from err
    except pika.exceptions.ChannelClosedByBroker as err:
        if err.reply_code == 406:
            raise TopologyConflict(f"{action}: {err.reply_text}; delete the old queue or exchange, or choose "
                                   f"another broker.prefix") from err
        if err.reply_code == 403:
            raise AccessRefused(f"{action}: {err.reply_text}") from err
        raise BrokerConnectionLost(f"{action}: the broker closed the channel "
                                   f"({err.reply_code} {err.reply_text})") from err
    except pika.exceptions.AMQPConnectionError as err:
        raise BrokerConnectionLost(f"{action}: connection lost ({err!r})") from err
    except pika.exceptions.AMQPChannelError as err:
        raise BrokerConnectionLost(f"{action}: channel lost ({err!r})") from err
    except (OSError, pika.exceptions.AMQPError) as err:  # socket errors and timeouts, TLS, frame errors
        raise BrokerConnectionLost(f"{action}: {err!r}") from err


class BrokerLink:
    """One blocking connection with one channel. Subclasses add what they do with it; ``_opened`` sets the
    fresh channel up, ``_forget`` drops what belonged to the closed connection."""

    def __init__(self, settings: BrokerSettings, connection_name: str) -> None:
        self.settings = settings
        self.connection_name = connection_name
        self._connection: pika.BlockingConnection | None = None
        self._channel: BlockingChannel | None = None

    def connect(self) -> None:
        """Open the connection and the channel within ``connect_timeout_s``; raises BrokerUnreachable (worth
        a retry), AccessRefused."""
        self.close()
        params = connection_parameters(self.settings, self.connection_name)
        where = mask_url(self.settings.url)
        try:
            with translated_errors(f"connecting to {where}"):
                self._connection = pika.BlockingConnection(params)
            with self._waiting(f"opening a channel on {where}"):
                self._channel = self._connection.channel()
                self._opened(self._channel)
        except BrokerConnectionLost as err:
            self.close()
            raise BrokerUnreachable(str(err)) from err
        except BaseException:
            self.close()
            raise
        logger.debug("connected to %s as %r", where, self.connection_name)

    def _opened(self, channel: BlockingChannel) -> None:
        """Set up a freshly opened channel (nothing by default)."""

    @property
    def is_open(self) -> bool:
        return bool(self._connection is not None and self._connection.is_open
                    and self._channel is not None and self._channel.is_open)

    def close(self) -> None:
        """Close the connection if open, within ``CLOSE_TIMEOUT_S``; never raises. Deliveries not yet acked
        go back to their queues."""
        connection, self._connection, self._channel = self._connection, None, None
        self._forget()
        if connection is None or not connection.is_open:
            return
        where = mask_url(self.settings.url)

        def slow() -> None:
            logger.warning("waiting for %s to answer the close of the connection; giving up after %g s",
                           where, CLOSE_TIMEOUT_S)

        failure = close_within(connection, CLOSE_TIMEOUT_S, "the close", slow, SLOW_NOTICE_S)
        if isinstance(failure, NoAnswer):
            logger.warning("%s did not answer the close within %g s; the connection was dropped", where,
                           CLOSE_TIMEOUT_S)
        elif failure is not None:
            logger.debug("closing the connection failed: %r", failure)

    @contextmanager
    def _waiting(self, action: str, extra_s: float = 0.0) -> Iterator[None]:
        """``translated_errors(action)`` for calls that wait for the broker: without an answer within
        ``ANSWER_TIMEOUT_S + extra_s`` the connection is dropped and they raise BrokerConnectionLost; a wait
        beyond ``SLOW_NOTICE_S + extra_s`` is logged."""
        with translated_errors(action):
            connection = self._connection
            if connection is None:
                raise BrokerConnectionLost(f"{action}: not connected")
            limit = ANSWER_TIMEOUT_S + extra_s

            def slow() -> None:
                logger.warning("waiting for the broker: %s; giving up after %g s", action, limit)

            with deadline(connection, limit, action, slow, SLOW_NOTICE_S + extra_s):
                yield

    def _forget(self) -> None:
        """Drop the state of the connection just closed (nothing by default)."""

    def _require_channel(self) -> BlockingChannel:
        if self._channel is None or self._connection is None:
            raise BrokerConnectionLost("not connected")
        return self._channel

    def declare(self, spec: Topology) -> None:
        """Declare the exchanges, queues and bindings of ``spec``; raises PluginMissing for an exchange type
        the broker lacks, TopologyConflict for a name that exists with other arguments."""
        channel = self._require_channel()
        for exchange in spec.exchanges:
            with self._waiting(f"declaring exchange {exchange.name}"):
                channel.exchange_declare(exchange.name, exchange_type=exchange.type, durable=exchange.durable,
                                         arguments=exchange.arguments or None)
        for queue in spec.queues:
            with self._waiting(f"declaring queue {queue.name}"):
                channel.queue_declare(queue.name, durable=queue.durable, arguments=queue.arguments or None)
        for binding in spec.bindings:
            with self._waiting(f"binding {binding.queue} to {binding.exchange}"):
                channel.queue_bind(binding.queue, binding.exchange, routing_key=binding.routing_key,
                                   arguments=binding.arguments or None)
