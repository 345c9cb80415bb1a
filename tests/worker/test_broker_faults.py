"""Broker faults played through a misbehaving proxy in front of the real broker (``tests/support``): a broker
that accepts TCP but never answers, a stalled connection, a cut one. Clients give up in time with their own
errors, workers keep retrying with one log line per attempt and no traceback, keep their open episodes, and
stop in bounded time."""

import contextlib
import dataclasses
import logging
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pika
import pytest

from worker.broker import link
from worker.broker.agent_transport import BrokerConnectionLost, BrokerUnreachable, Transport
from worker.client import ClientTimeout, ConnectionFailed, JobClient, JobClientError, MazeClient
from worker.client import ConnectionLost as ClientConnectionLost
from worker.settings import BrokerSettings
from worker.wire import topology

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parents[1]))
from job_harness import job_settings, job_worker  # noqa: E402
from support.faulty_broker import FaultyBroker  # noqa: E402
from support.worker_topology import declare_worker_topology  # noqa: E402
from worker_harness import (  # noqa: E402
    QUICK_HEARTBEAT,
    Producer,
    SignPolicy,
    running_worker,
    settings_for,
    start_worker_process,
    state,
    wait_until,
)

pytestmark = pytest.mark.integration

SHARDS = 2


@pytest.fixture
def proxy(amqp_url: str) -> Iterator[FaultyBroker]:
    with FaultyBroker.in_front_of(amqp_url) as faulty:
        yield faulty


@pytest.fixture
def short_waits(monkeypatch: pytest.MonkeyPatch) -> None:
    """The worker's deadlines shortened, so that tests see a stalled broker given up within seconds."""
    monkeypatch.setattr(link, "ANSWER_TIMEOUT_S", 2.0)
    monkeypatch.setattr(link, "CLOSE_TIMEOUT_S", 1.0)
    monkeypatch.setattr(link, "SLOW_NOTICE_S", 0.3)


@pytest.fixture
def states_exchange(amqp_url: str, prefix: str) -> None:
    """The worker's topology, declared directly on the broker, for clients to publish to."""
    connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
    try:
        declare_worker_topology(connection.channel(), prefix, SHARDS)
    finally:
        connection.close()


@contextlib.contextmanager
def forwarding_after(proxy: FaultyBroker, attempts: int, timeout: float = 90.0) -> Iterator[None]:
    """Leave the proxy as it is until ``attempts`` connections came in, then let it forward (on a thread):
    those attempts all fail."""
    done = threading.Event()

    def watch() -> None:
        until = time.monotonic() + timeout
        while proxy.accepted < attempts and time.monotonic() < until:
            if done.wait(0.05):
                return
        proxy.forward()

    thread = threading.Thread(target=watch, name="test: forward later", daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join(10)


def causes(err: BaseException) -> list[str]:
    names = []
    cause: BaseException | None = err
    while cause is not None:
        names.append(type(cause).__name__)
        cause = cause.__cause__
    return names


def with_heartbeat(settings: BrokerSettings, heartbeat_s: int) -> BrokerSettings:
    """``settings`` with AMQP heartbeats of ``heartbeat_s``: connecting gives up after two of them."""
    return dataclasses.replace(settings, heartbeat_s=heartbeat_s)


# -- producers ---------------------------------------------------------------------------------------------

def test_client_gives_up_on_a_broker_that_never_answers(proxy: FaultyBroker) -> None:
    proxy.blackhole()
    started = time.monotonic()
    with pytest.raises(ConnectionFailed) as info:
        MazeClient(proxy.url, timeout=1.0)
    assert 0.9 <= time.monotonic() - started < 3.0
    message = str(info.value)
    assert "within 1 s" in message and "did not answer" in message and ":****@" in message
    assert causes(info.value)[1] == "AMQPConnectorStackTimeout"
    assert proxy.accepted == 1


def test_job_client_gives_up_on_a_broker_that_never_answers(proxy: FaultyBroker) -> None:
    proxy.blackhole()
    started = time.monotonic()
    with pytest.raises(JobClientError, match="within 1 s: no AMQP handshake in time"):
        JobClient(proxy.url, timeout=1.0)
    assert time.monotonic() - started < 3.0


def test_client_close_returns_in_time_when_the_broker_stalls(proxy: FaultyBroker, prefix: str,
                                                            states_exchange: None) -> None:
    client = MazeClient(proxy.url, prefix=prefix, timeout=1.0)
    proxy.stall()
    started = time.monotonic()
    client.close()
    assert time.monotonic() - started < 2.0
    assert not client.is_open
    client.close()  # twice is harmless


def test_job_client_close_returns_in_time_when_the_broker_stalls(proxy: FaultyBroker) -> None:
    client = JobClient(proxy.url, timeout=1.0)
    proxy.stall()
    started = time.monotonic()
    client.close()
    assert time.monotonic() - started < 2.0
    assert not client.connection.is_open


def test_client_calls_end_in_time_when_the_broker_stalls(proxy: FaultyBroker, prefix: str,
                                                         states_exchange: None) -> None:
    client = MazeClient(proxy.url, prefix=prefix, timeout=1.0)
    proxy.stall()
    started = time.monotonic()
    with pytest.raises(ClientTimeout):
        client.act("stalled", 0, [0.0])
    assert time.monotonic() - started < 2.5
    # 32 MB cannot leave the client while nothing reads them: the publish waits, and is given up
    started = time.monotonic()
    with pytest.raises(ClientConnectionLost, match="no answer from the broker within 1 s") as info:
        client.send("stalled", 1, np.zeros(8_000_000, dtype=np.float32))
    assert time.monotonic() - started < 3.0
    assert "NoAnswer" in causes(info.value)
    assert not client.is_open
    started = time.monotonic()
    client.close()
    assert time.monotonic() - started < 0.5


def test_client_sees_a_cut_connection_as_connection_lost(proxy: FaultyBroker, prefix: str,
                                                         states_exchange: None) -> None:
    with MazeClient(proxy.url, prefix=prefix, timeout=2.0) as client:
        assert proxy.cut() == 1
        with pytest.raises(ClientConnectionLost, match="create a new client"):
            client.act("cut", 0, [0.0])


# -- the worker's transport --------------------------------------------------------------------------------

def test_transport_connect_to_a_broker_that_never_answers_is_worth_a_retry(proxy: FaultyBroker) -> None:
    proxy.blackhole()
    transport = Transport(BrokerSettings(url=proxy.url, prefix="unused", heartbeat_s=1))
    started = time.monotonic()
    with pytest.raises(BrokerUnreachable, match="not set up in time") as info:
        transport.connect()
    assert time.monotonic() - started < 4.0  # two heartbeats
    assert "AMQPConnectorStackTimeout" in causes(info.value)
    assert not transport.is_open


def test_transport_gives_up_a_call_the_stalled_broker_does_not_answer(
        proxy: FaultyBroker, prefix: str, short_waits: None, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="worker.broker")
    transport = Transport(BrokerSettings(url=proxy.url, prefix=prefix, shards=SHARDS))
    transport.connect()
    transport.declare_topology()
    proxy.stall()
    started = time.monotonic()
    expected = "starting consumers: no answer from the broker within 2 s"
    with pytest.raises(BrokerConnectionLost, match=expected) as info:
        transport.consume(topology.shard_queues(prefix, SHARDS))
    assert time.monotonic() - started < 4.0
    assert "NoAnswer" in causes(info.value)
    assert "waiting for the broker: starting consumers; giving up after 2 s" in caplog.text
    started = time.monotonic()
    transport.close()
    assert time.monotonic() - started < 0.5 and not transport.is_open


def test_transport_close_on_a_stalled_broker_is_bounded_and_logged(
        proxy: FaultyBroker, short_waits: None, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="worker.broker")
    transport = Transport(BrokerSettings(url=proxy.url, prefix="unused"))
    transport.connect()
    proxy.stall()
    started = time.monotonic()
    transport.close()
    assert time.monotonic() - started < 2.5
    assert "to answer the close of the connection; giving up after 1 s" in caplog.text
    assert "did not answer the close within 1 s; the connection was dropped" in caplog.text


# -- the agent worker --------------------------------------------------------------------------------------

def test_worker_keeps_retrying_a_broker_that_never_answers_then_serves(
        amqp_url: str, prefix: str, proxy: FaultyBroker) -> None:
    proxy.blackhole()
    with forwarding_after(proxy, attempts=2):
        worker = start_worker_process(proxy.url, prefix, *QUICK_HEARTBEAT, "broker.heartbeat_s=1",
                                      shards=SHARDS, timeout=90)
    try:
        producer = Producer(amqp_url, prefix)
        reply = producer.call("after-the-blackhole", 0, state(0.5))
        producer.close()
        assert reply["error"] is None and reply["seq"] == 0, reply
    finally:
        code = worker.terminate(timeout=60)
    log = worker.log()
    assert code == 0, log
    assert "Traceback" not in log, log
    lines = log.splitlines()
    retries = [index for index, line in enumerate(lines) if "cannot reach the broker" in line]
    assert len(retries) >= 2, log
    assert all("not set up in time" in lines[index] for index in retries), log
    consuming = [index for index, line in enumerate(lines) if " consuming " in line]
    assert consuming and consuming[0] > retries[-1], log  # consuming is said once the connection is open


def test_worker_keeps_its_episodes_across_a_cut_and_a_stall(
        amqp_url: str, prefix: str, proxy: FaultyBroker, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="worker")
    settings = settings_for(proxy.url, prefix, shards=SHARDS)
    settings = dataclasses.replace(settings, broker=with_heartbeat(settings.broker, 1))
    value = state(0.4)
    with running_worker(settings, SignPolicy()) as worker:
        service = worker.service
        producer = Producer(amqp_url, prefix)

        def step(seq: int, timeout: float = 20.0) -> None:
            cid = producer.send("kept", seq, value, reward=None if seq == 0 else 1.0)
            reply = producer.wait([cid], timeout)[0]
            assert reply["error"] is None and (reply["episode"], reply["seq"]) == ("kept", seq), reply
            assert reply["action"] == SignPolicy.expected(value) and not reply.get("resumed"), reply

        for seq in range(3):
            step(seq)
        assert proxy.cut() >= 1
        step(3, timeout=30.0)
        assert service.metrics.reconnects._value.get() >= 1

        proxy.stall()
        cid = producer.send("kept", 4, value, reward=1.0)
        wait_until(lambda: not service.consuming.is_set(), "the worker did not notice the stall", 30.0)
        proxy.forward()
        reply = producer.wait([cid], 45.0)[0]
        assert reply["error"] is None and reply["seq"] == 4 and not reply.get("resumed"), reply
        step(5)
        assert len(service.table) == 1  # the same episode, open all along
        producer.close()
    assert "connection lost" in caplog.text


def test_worker_stops_in_bounded_time_when_the_broker_stalls(
        prefix: str, proxy: FaultyBroker, short_waits: None, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="worker")
    with running_worker(settings_for(proxy.url, prefix, shards=SHARDS), SignPolicy()) as worker:
        proxy.stall()
        started = time.monotonic()
        worker.stop()
        took = time.monotonic() - started
    assert took < 8.0, caplog.text
    assert "waiting for the broker: " in caplog.text  # what it waited for, while it waited


# -- the job worker ----------------------------------------------------------------------------------------

def test_job_worker_retries_a_broker_that_never_answers_and_reconnects_after_a_cut(
        prefix: str, proxy: FaultyBroker, broker_cleanup: object, tmp_path: Path,
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="worker")
    settings = job_settings(proxy.url, prefix, tmp_path)
    settings = dataclasses.replace(settings, broker=with_heartbeat(settings.broker, 1))
    proxy.blackhole()

    def messages(fragment: str) -> list[str]:
        return [record.getMessage() for record in caplog.records if fragment in record.getMessage()]

    with forwarding_after(proxy, attempts=2), job_worker(settings, broker_cleanup) as worker:
        retries = messages("cannot reach the broker")
        assert len(retries) >= 2 and all("not set up in time" in line for line in retries), retries
        assert proxy.cut() >= 1
        wait_until(lambda: messages("connection lost"), "the job worker did not notice the cut", 20.0)
        wait_until(lambda: worker.service.consuming.is_set() and proxy.relayed >= 1,
                   "the job worker did not reconnect", 30.0)
