"""What both of the worker's transports share: one blocking connection with one channel, its errors.

pika's exceptions never leave the transports: ``translated_errors`` turns them into the errors below, so the
services reason about ``ConnectionLost`` and ``PluginMissing`` rather than about AMQP reply codes.
``BrokerLink`` opens and closes the connection and declares a topology;
``worker.broker.agent_transport.Transport`` (the agent worker) and
``worker.broker.job_transport.JobTransport`` (the job worker) build on it.
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import Iterator
from contextlib import contextmanager

import pika
import pika.exceptions
from pika.adapters.blocking_connection import BlockingChannel

from worker.settings import BrokerSettings
from worker.wire.topology import Topology, mask_url

logger = logging.getLogger(__name__)

PLUGIN_HINT = ("the broker lacks the consistent-hash exchange; enable it with "
               "`rabbitmq-plugins enable rabbitmq_consistent_hash_exchange` and start the worker again")


class TransportError(Exception):
    """Base of the errors the transport raises; pika's own exceptions never leave this module."""


class BrokerUnreachable(TransportError):
    """No connection could be opened (broker down, wrong host or port); worth retrying."""


class ConnectionLost(TransportError):
    """An open connection or channel broke (broker restart, connection closed by an operator, network)."""


class AccessRefused(TransportError):
    """The broker refused the credentials or the virtual host; retrying will not help."""


class PluginMissing(TransportError):
    """The ``x-consistent-hash`` exchange type is unknown to the broker."""


class TopologyConflict(TransportError):
    """An exchange or queue of this prefix exists with other arguments (e.g. a classic queue of that name)."""


def connection_parameters(settings: BrokerSettings, connection_name: str) -> pika.URLParameters:
    """pika parameters for ``settings.url``, with TLS set up for ``amqps://`` and a name the broker shows."""
    params = pika.URLParameters(settings.url)
    params.heartbeat = settings.heartbeat_s
    params.blocked_connection_timeout = 60
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


@contextmanager
def translated_errors(action: str) -> Iterator[None]:
    """Turn pika's exceptions raised during ``action`` into this module's."""
    try:
        yield
    except pika.exceptions.ProbableAuthenticationError as err:
        raise AccessRefused(f"{action}: the broker refused the credentials ({err})") from err
    except pika.exceptions.ProbableAccessDeniedError as err:
        raise AccessRefused(f"{action}: access to the virtual host was denied ({err})") from err
    except pika.exceptions.ConnectionClosedByBroker as err:
        if err.reply_code == 503 and "exchange type" in str(err.reply_text):
            raise PluginMissing(PLUGIN_HINT) from err
        if err.reply_code in (403, 530):
            raise AccessRefused(f"{action}: {err.reply_text}") from err
        raise ConnectionLost(f"{action}: the broker closed the connection "
                             f"({err.reply_code} {err.reply_text})") from err
    except pika.exceptions.ChannelClosedByBroker as err:
        if err.reply_code == 406:
            raise TopologyConflict(f"{action}: {err.reply_text}; delete the old queue or exchange, or choose "
                                   f"another broker.prefix") from err
        if err.reply_code == 403:
            raise AccessRefused(f"{action}: {err.reply_text}") from err
        raise ConnectionLost(f"{action}: the broker closed the channel ({err.reply_code} {err.reply_text})") \
            from err
    except pika.exceptions.AMQPConnectionError as err:
        raise ConnectionLost(f"{action}: connection lost ({err!r})") from err
    except pika.exceptions.AMQPChannelError as err:
        raise ConnectionLost(f"{action}: channel lost ({err!r})") from err
    except (OSError, pika.exceptions.AMQPError) as err:
        raise ConnectionLost(f"{action}: {err!r}") from err




class BrokerLink:
    """One blocking connection with one channel. Subclasses add what they do with it; ``_opened`` sets the
    fresh channel up, ``_forget`` drops what belonged to the closed connection."""

    def __init__(self, settings: BrokerSettings, connection_name: str) -> None:
        self.settings = settings
        self.connection_name = connection_name
        self._connection: pika.BlockingConnection | None = None
        self._channel: BlockingChannel | None = None

    def connect(self) -> None:
        """Open the connection and the channel; raises BrokerUnreachable, AccessRefused."""
        self.close()
        params = connection_parameters(self.settings, self.connection_name)
        try:
            with translated_errors(f"connecting to {mask_url(self.settings.url)}"):
                self._connection = pika.BlockingConnection(params)
                self._channel = self._connection.channel()
                self._opened(self._channel)
        except ConnectionLost as err:
            raise BrokerUnreachable(str(err)) from err

    def _opened(self, channel: BlockingChannel) -> None:
        """Set up a freshly opened channel (nothing by default)."""

    @property
    def is_open(self) -> bool:
        return bool(self._connection is not None and self._connection.is_open
                    and self._channel is not None and self._channel.is_open)

    def close(self) -> None:
        """Close the connection if open; never raises. Deliveries not yet acked go back to their queues."""
        connection, self._connection, self._channel = self._connection, None, None
        self._forget()
        if connection is not None and connection.is_open:
            try:
                connection.close()
            except Exception as err:  # noqa: BLE001 - closing a broken connection may fail in many ways
                logger.debug("closing the connection failed: %r", err)

    def _forget(self) -> None:
        """Drop the state of the connection just closed (nothing by default)."""

    def _require_channel(self) -> BlockingChannel:
        if self._channel is None or self._connection is None:
            raise ConnectionLost("not connected")
        return self._channel

    def declare(self, spec: Topology) -> None:
        """Declare the exchanges, queues and bindings of ``spec``; raises PluginMissing for an exchange type
        the broker lacks, TopologyConflict for a name that exists with other arguments."""
        channel = self._require_channel()
        for exchange in spec.exchanges:
            with translated_errors(f"declaring exchange {exchange.name}"):
                channel.exchange_declare(exchange.name, exchange_type=exchange.type, durable=exchange.durable,
                                         arguments=exchange.arguments or None)
        for queue in spec.queues:
            with translated_errors(f"declaring queue {queue.name}"):
                channel.queue_declare(queue.name, durable=queue.durable, arguments=queue.arguments or None)
        for binding in spec.bindings:
            with translated_errors(f"binding {binding.queue} to {binding.exchange}"):
                channel.queue_bind(binding.queue, binding.exchange, routing_key=binding.routing_key,
                                   arguments=binding.arguments or None)
