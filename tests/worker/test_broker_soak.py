"""After a bounded hostile mix, the broker still answers: a new connection completes its AMQP handshake within
2 s and no queue is unresponsive (docs/operations.md, "Limits").

The mix is what wedged RabbitMQ 3.10 during earlier hostile runs, cut down to what the limits allow: states
as large as a worker accepts (``MAX_STATE_BYTES``) on the quorum shard queues, a body over the protocol's
limit (answered ``bad_message``) and one over the broker's ``max_message_size`` (refused at the door), a
flood of one-state episodes, and a worker killed with -9 while it holds deliveries, its exclusive heartbeat
queue with it. About 110 MB go through the broker in all; the test takes 20 to 60 s.
"""

from __future__ import annotations

import sys
import time
import uuid
from pathlib import Path

import numpy as np
import pika
import pika.exceptions
import pytest

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parents[1]))

from test_broker_limits import channel_with_message_limit, local_broker  # noqa: E402
from worker_harness import Producer, rabbitmqctl, start_subprocess_worker, wait_until  # noqa: E402

from worker.wire import topology  # noqa: E402
from worker.wire.protocol import PROTOCOL_VERSION, StateMessage, encode_state  # noqa: E402

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SHARDS = 4
LARGE_STATES = 8
FLOOD = 20_000
HANDSHAKE_LIMIT_S = 2.0


def handshake_seconds(url: str) -> float:
    """Seconds a new connection takes to complete its AMQP handshake and open a channel."""
    parameters = pika.URLParameters(url)
    parameters.connection_attempts = 1
    parameters.socket_timeout = HANDSHAKE_LIMIT_S * 5
    parameters.blocked_connection_timeout = HANDSHAKE_LIMIT_S * 5
    start = time.monotonic()
    connection = pika.BlockingConnection(parameters)
    connection.channel()
    elapsed = time.monotonic() - start
    connection.close()
    return elapsed


def heartbeat_queues(prefix: str) -> set[str]:
    """The ``<prefix>.workers.<id>`` queues the broker holds now."""
    listed = rabbitmqctl("list_queues", "name", timeout=60).split()
    return {name for name in listed if name.startswith(f"{prefix}.workers.")}


def unresponsive_queues() -> list[str]:
    listed = rabbitmqctl("list_unresponsive_queues", "--queue-timeout", "5", "name", timeout=120)
    return [line.strip() for line in listed.splitlines() if line.strip() and line.strip() != "name"]


def test_the_broker_answers_handshakes_after_the_hostile_mix(amqp_url: str, prefix: str) -> None:
    admin = local_broker(amqp_url)  # skips unless rabbitmqctl reaches the tests' broker
    workers = [start_subprocess_worker(amqp_url, prefix, shards=SHARDS) for _ in range(2)]
    producer = Producer(amqp_url, prefix)
    try:
        wait_until(lambda: len(heartbeat_queues(prefix)) == 2, "two heartbeat queues", timeout=20,
                   interval=0.5)

        # a body over the protocol's limit is answered; one over the broker's never reaches a queue
        over_protocol = encode_state(StateMessage(PROTOCOL_VERSION, "over-protocol", 0,
                                                  bytes(topology.MAX_STATE_BYTES), None, False))
        (reply,) = producer.wait([producer.publish(over_protocol, "over-protocol")], timeout=30)
        assert reply["error"]["code"] == "bad_message"
        limited = channel_with_message_limit(admin, topology.BROKER_MAX_MESSAGE_BYTES)
        limited.basic_publish(topology.states_exchange(prefix), "over-broker",
                              bytes(topology.BROKER_MAX_MESSAGE_BYTES + 1))
        with pytest.raises(pika.exceptions.ChannelClosedByBroker, match="larger than configured max size"):
            limited.queue_declare("", exclusive=True)

        # states as large as a worker accepts and a flood of one-state episodes, and meanwhile a worker
        # killed with -9 while it holds deliveries, then its replacement too (a crash loop, cut short)
        large = np.zeros(topology.MAX_STATE_BYTES - 4096, dtype=np.uint8)
        sent = [producer.send(f"large-{i}", 0, large) for i in range(LARGE_STATES)]
        flood: list[str] = []
        for round_ in range(2):
            flood += [producer.send(f"flood-{uuid.uuid4().hex[:8]}", 0, [0.01, 0.0, 0.0, 0.0], done=True)
                      for _ in range(FLOOD // 2)]
            producer.connection.process_data_events(time_limit=0.1)
            victim = workers.pop(0)
            victim.kill()
            wait_until(lambda: len(heartbeat_queues(prefix)) == 1, "the killed worker's heartbeat queue gone",
                       timeout=15, interval=0.5)
            if round_ == 0:
                workers.append(start_subprocess_worker(amqp_url, prefix, shards=SHARDS))
        replies = producer.wait(sent, timeout=60)
        assert [reply["error"]["code"] for reply in replies] == ["bad_message"] * LARGE_STATES  # not CartPole
        replies = producer.wait(flood, timeout=90)
        assert all(reply["error"] is None for reply in replies), \
            {reply["error"]["code"] for reply in replies if reply["error"]}

        # the broker still answers: handshakes within the limit, every queue responsive
        elapsed = [handshake_seconds(amqp_url) for _ in range(3)]
        assert max(elapsed) < HANDSHAKE_LIMIT_S, f"handshakes took {elapsed} s"
        assert unresponsive_queues() == []
        assert workers[0].process.poll() is None, workers[0].log()
    finally:
        producer.close()
        for worker in workers:
            worker.kill()
        if admin.is_open:
            admin.close()
