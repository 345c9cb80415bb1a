"""maze-worker against the real broker when things go wrong: a killed connection, SIGTERM under load, a broker
that cannot be reached or refuses us, a missing plugin and a conflicting queue."""

import sys
import threading
from pathlib import Path

import pika
import pytest

from worker.broker.agent_transport import AccessRefused, PluginMissing, TopologyConflict, Transport
from worker.settings import BrokerSettings
from worker.wire import topology

sys.path.insert(0, str(Path(__file__).parent))
from worker_harness import (  # noqa: E402
    Producer,
    SignPolicy,
    close_connections,
    require_rabbitmqctl,
    running_worker,
    settings_for,
    start_subprocess_worker,
    state,
    wait_until,
)

pytestmark = pytest.mark.integration


def test_episodes_continue_after_the_broker_closes_the_worker_connection(amqp_url: str, prefix: str) -> None:
    policy = SignPolicy()
    with running_worker(settings_for(amqp_url, prefix), policy) as worker:
        fragment = f"maze-worker {prefix} "
        require_rabbitmqctl(fragment)
        producer = Producer(amqp_url, prefix)
        episodes = [f"k{index}" for index in range(16)]
        values = {episode: state(0.3 if index % 2 else -0.3) for index, episode in enumerate(episodes)}
        for seq in range(12):
            if seq == 6:
                assert close_connections(fragment) == 1
            ids = [producer.send(episode, seq, values[episode], reward=None if seq == 0 else 1.0)
                   for episode in episodes]
            for episode, reply in zip(episodes, producer.wait(ids, timeout=30), strict=True):
                assert reply["error"] is None, reply
                assert (reply["episode"], reply["seq"], reply["action"]) == \
                    (episode, seq, SignPolicy.expected(values[episode]))
        producer.close()
        assert worker.service.metrics.reconnects._value.get() >= 1
        assert worker.service.consuming.is_set() and len(worker.service.table) == 16


LAST_SEQ = 29


class ClosedLoop:
    """Episodes driven as the protocol asks: the next state of an episode only after the reply to its last."""

    def __init__(self, producer: Producer, episodes: int) -> None:
        self.producer = producer
        self.pending = {producer.send(f"load-{index}", 0, state(0.1), reward=None): (f"load-{index}", 0)
                        for index in range(episodes)}
        self.replies: list[dict] = []

    def step(self) -> None:
        producer = self.producer
        producer.connection.process_data_events(time_limit=0.05)
        for correlation_id in [cid for cid in self.pending if cid in producer.replies]:
            episode, seq = self.pending.pop(correlation_id)
            self.replies.append(producer.replies.pop(correlation_id))
            if seq < LAST_SEQ:
                self.pending[producer.send(episode, seq + 1, state(0.1))] = (episode, seq + 1)


def test_sigterm_under_load_answers_what_it_holds_and_loses_nothing(amqp_url: str, prefix: str) -> None:
    process = start_subprocess_worker(amqp_url, prefix, "stats.interval_s=0")
    producer = Producer(amqp_url, prefix)
    load = ClosedLoop(producer, episodes=60)
    wait_until(lambda: len(load.replies) >= 300, "300 replies did not arrive", 60, step=load.step)
    assert process.terminate() == 0
    output = process.log()
    assert "SIGTERM received" in output and "final statistics" in output
    assert load.pending, "the load finished before SIGTERM; run longer episodes"
    # The episodes handed over at SIGTERM and the states left queued go on with a second worker.
    with running_worker(settings_for(amqp_url, prefix)):
        wait_until(lambda: not load.pending, "the episodes did not all reach their last step", 60,
                   step=load.step)
    assert len(load.replies) == 60 * (LAST_SEQ + 1)
    assert [reply["error"] for reply in load.replies if reply["error"]] == []
    assert producer.dead_letter_count() == 0
    producer.close()


def test_an_unreachable_broker_is_retried_until_stopped(unused_port: int) -> None:
    settings = settings_for(f"amqp://guest:guest@127.0.0.1:{unused_port}/%2F", "unreachable")
    with pytest.raises(AssertionError, match="did not start consuming"), \
            running_worker(settings, start_timeout=1.5) as _:
        pass


def test_refused_credentials_stop_the_worker(amqp_url: str, prefix: str) -> None:
    bad_url = amqp_url.replace("guest:guest@", "guest:not-the-password@", 1)
    if bad_url == amqp_url:
        pytest.skip("the broker URL has no guest:guest credentials to spoil")
    with pytest.raises(AssertionError, match="AccessRefused"), running_worker(settings_for(bad_url, prefix)):
        pass


def test_a_missing_plugin_fails_with_how_to_enable_it(amqp_url: str, prefix: str,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    # The shared broker has the plugin; an unknown exchange type draws the same refusal from it.
    monkeypatch.setattr(topology, "states_exchange_type", lambda: "x-consistent-hash-missing")
    transport = Transport(BrokerSettings(url=amqp_url, prefix=prefix, shards=2))
    transport.connect()
    try:
        with pytest.raises(PluginMissing, match="rabbitmq-plugins enable rabbitmq_consistent_hash_exchange"):
            transport.declare_topology()
    finally:
        transport.close()


def test_a_conflicting_queue_is_reported(amqp_url: str, prefix: str) -> None:
    connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
    connection.channel().queue_declare(topology.shard_queue(prefix, 0, 2), durable=True)  # classic
    connection.close()
    transport = Transport(BrokerSettings(url=amqp_url, prefix=prefix, shards=2))
    transport.connect()
    try:
        with pytest.raises(TopologyConflict, match="another broker.prefix"):
            transport.declare_topology()
    finally:
        transport.close()


def test_access_refused_is_translated(amqp_url: str) -> None:
    bad_url = amqp_url.replace("guest:guest@", "guest:wrong@", 1)
    if bad_url == amqp_url:
        pytest.skip("the broker URL has no guest:guest credentials to spoil")
    transport = Transport(BrokerSettings(url=bad_url))
    with pytest.raises(AccessRefused) as raised:
        transport.connect()
    assert "wrong" not in str(raised.value)


def test_stop_from_another_thread_answers_in_flight_states(amqp_url: str, prefix: str) -> None:
    with running_worker(settings_for(amqp_url, prefix)) as worker:
        producer = Producer(amqp_url, prefix)
        ids = [producer.send(f"s{i}", 0, state(0.1)) for i in range(300)]
        producer.pump(lambda: producer.received > 0)
        stopper = threading.Thread(target=worker.stop)
        stopper.start()
        stopper.join(30)
    with running_worker(settings_for(amqp_url, prefix)):
        replies = producer.wait(ids, timeout=60)
    assert all(reply["error"] is None for reply in replies)
    producer.close()
