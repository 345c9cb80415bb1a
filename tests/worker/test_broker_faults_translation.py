"""Every pika failure becomes one of the transport's errors, and the connection parameters bound every wait
(no broker needed; ``test_broker_faults.py`` plays the failures against a real one)."""

import ssl

import pika
import pika.exceptions
import pytest
from pika.adapters.utils import connection_workflow as workflow

from worker.broker.deadline import NoAnswer
from worker.broker.link import (
    BLOCKED_TIMEOUT_S,
    CONNECT_TIMEOUT_S,
    AccessRefused,
    BrokerConnectionLost,
    PluginMissing,
    TopologyConflict,
    TransportError,
    connect_timeout_s,
    connection_parameters,
    translated_errors,
)
from worker.client import connection
from worker.settings import BrokerSettings

ERRORS: list[tuple[BaseException, type[TransportError], str]] = [
    # connecting: pika's connection workflow raises outside AMQPError (the bug this file guards against)
    (workflow.AMQPConnectorStackTimeout("Timeout during AMQP handshake"), BrokerConnectionLost,
     "not set up in time"),
    (workflow.AMQPConnectorAborted("aborted"), BrokerConnectionLost, "AMQPConnectorAborted"),
    (workflow.AMQPConnectorWrongState("wrong state"), BrokerConnectionLost, "AMQPConnectorWrongState"),
    (workflow.AMQPConnectorSocketConnectError(ConnectionRefusedError(111, "refused")), BrokerConnectionLost,
     "refused"),
    (workflow.AMQPConnectorTransportSetupError(ssl.SSLError("bad handshake")), BrokerConnectionLost,
     "bad handshake"),
    (workflow.AMQPConnectorAMQPHandshakeError(pika.exceptions.IncompatibleProtocolError("x")),
     BrokerConnectionLost, "IncompatibleProtocolError"),
    (workflow.AMQPConnectionWorkflowAborted(), BrokerConnectionLost, "AMQPConnectionWorkflowAborted"),
    (workflow.AMQPConnectionWorkflowFailed([workflow.AMQPConnectorStackTimeout("t")]), BrokerConnectionLost,
     "AMQPConnectionWorkflowFailed"),
    (pika.exceptions.AMQPConnectionError("connect failed"), BrokerConnectionLost, "connect failed"),
    (pika.exceptions.IncompatibleProtocolError("not AMQP"), BrokerConnectionLost, "not AMQP"),
    (pika.exceptions.ProbableAuthenticationError("refused"), AccessRefused, "credentials"),
    (pika.exceptions.AuthenticationError("PLAIN"), AccessRefused, "credentials"),
    (pika.exceptions.ProbableAccessDeniedError("vhost"), AccessRefused, "virtual host"),
    # an open connection breaking
    (pika.exceptions.StreamLostError("Transport indicated EOF"), BrokerConnectionLost, "EOF"),
    (pika.exceptions.AMQPHeartbeatTimeout("missed heartbeats"), BrokerConnectionLost, "missed heartbeats"),
    (pika.exceptions.ConnectionBlockedTimeout("blocked"), BrokerConnectionLost, "blocked"),
    (pika.exceptions.ConnectionWrongStateError("closed"), BrokerConnectionLost, "closed"),
    (pika.exceptions.ConnectionClosedByBroker(320, "CONNECTION_FORCED - broker forced connection closure"),
     BrokerConnectionLost, "CONNECTION_FORCED"),
    (pika.exceptions.ConnectionClosedByBroker(530, "NOT_ALLOWED"), AccessRefused, "NOT_ALLOWED"),
    (pika.exceptions.ConnectionClosedByBroker(503, "COMMAND_INVALID - unknown exchange type 'x'"),
     PluginMissing, "rabbitmq_consistent_hash_exchange"),
    (pika.exceptions.ConnectionClosedByClient(200, "Normal shutdown"), BrokerConnectionLost,
     "Normal shutdown"),
    (NoAnswer("declaring", 10.0), BrokerConnectionLost, "no answer from the broker within 10 s"),
    # channels
    (pika.exceptions.ChannelClosedByBroker(406, "PRECONDITION_FAILED - inequivalent arg"), TopologyConflict,
     "inequivalent"),
    (pika.exceptions.ChannelClosedByBroker(403, "ACCESS_REFUSED"), AccessRefused, "ACCESS_REFUSED"),
    (pika.exceptions.ChannelClosedByBroker(404, "NOT_FOUND - no queue"), BrokerConnectionLost, "NOT_FOUND"),
    (pika.exceptions.ChannelClosedByClient(200, "closed"), BrokerConnectionLost, "closed"),
    (pika.exceptions.ChannelWrongStateError("Channel is closed."), BrokerConnectionLost, "Channel is closed"),
    (pika.exceptions.UnroutableError([]), BrokerConnectionLost, "UnroutableError"),
    (pika.exceptions.NackError([]), BrokerConnectionLost, "NackError"),
    (pika.exceptions.UnexpectedFrameError("frame"), BrokerConnectionLost, "frame"),
    # sockets
    (TimeoutError("timed out"), BrokerConnectionLost, "timed out"),
    (ConnectionResetError(104, "Connection reset by peer"), BrokerConnectionLost, "reset"),
    (ssl.SSLError("decryption failed"), BrokerConnectionLost, "decryption failed"),
]


@pytest.mark.parametrize(("raised", "expected", "says"), ERRORS, ids=lambda value: type(value).__name__)
def test_pika_failures_become_transport_errors_with_the_cause_kept(
        raised: BaseException, expected: type[TransportError], says: str) -> None:
    with pytest.raises(TransportError) as info, translated_errors("doing it"):
        raise raised
    assert type(info.value) is expected
    assert says in str(info.value)
    assert info.value.__cause__ is raised
    if expected is not PluginMissing:
        assert str(info.value).startswith("doing it: ")


def test_our_own_errors_pass_through_unchanged() -> None:
    lost = BrokerConnectionLost("not connected")
    with pytest.raises(BrokerConnectionLost) as info, translated_errors("doing it"):
        raise lost
    assert info.value is lost


@pytest.mark.parametrize(("heartbeat_s", "expected"), [(0, CONNECT_TIMEOUT_S), (1, 2.0), (3, 6.0),
                                                       (5, 10.0), (60, CONNECT_TIMEOUT_S)])
def test_the_connect_timeout_is_two_heartbeats_at_most_the_cap(heartbeat_s: int, expected: float) -> None:
    assert connect_timeout_s(BrokerSettings(heartbeat_s=heartbeat_s)) == expected


def test_worker_connection_parameters_bound_every_wait() -> None:
    params = connection_parameters(BrokerSettings(heartbeat_s=1), "test")
    assert params.connection_attempts == 1
    assert params.socket_timeout == params.stack_timeout == 2.0
    assert params.blocked_connection_timeout == BLOCKED_TIMEOUT_S
    assert params.heartbeat == 1


def test_client_connection_parameters_bound_every_wait() -> None:
    params = connection.parameters("amqp://guest:guest@127.0.0.1:5672/%2F", "test", 1.5)
    assert params.connection_attempts == 1
    assert params.socket_timeout == params.stack_timeout == 1.5
    assert params.client_properties == {"connection_name": "test"}


def test_client_descriptions_mask_the_password_and_explain_a_handshake_timeout() -> None:
    url = "amqp://user:hunter2secret@127.0.0.1:5672/%2F"
    text = connection.describe(pika.exceptions.AMQPConnectionError("login hunter2secret"), url)
    assert "hunter2secret" not in text and "****" in text
    assert "did not answer" in connection.describe(workflow.AMQPConnectorStackTimeout("t"), url)
    assert all(isinstance(err, connection.CONNECT_ERRORS) for err, _, _ in ERRORS)
