"""The broker limits and the least-privilege definitions of deploy/rabbitmq, against a real RabbitMQ.

- a shard queue dead-letters a state given back more than ``SHARD_DELIVERY_LIMIT`` times, refuses states once
  it holds ``SHARD_MAX_BYTES`` (the waiting ones stay), and queues declared before the limits conflict;
- the broker's ``max_message_size`` of deploy/rabbitmq/20-maze.conf refuses a larger body;
- deploy/rabbitmq/definitions.json, loaded into a virtual host of the test's own: a worker serves with its
  user, a producer publishes states and reads its replies and nothing else, a submitter publishes jobs and
  follows their events and nothing else.

The tests share the broker with others: each uses its own prefix or virtual host and deletes it, and the one
setting they change on the broker (``max_message_size``) is changed only while one channel opens and then
restored, so it holds for that channel alone (RabbitMQ reads it when a channel starts).
"""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgpack
import pika
import pika.exceptions
import pytest
from pika.adapters.blocking_connection import BlockingChannel

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parents[1]))

from support.worker_topology import declare_worker_topology  # noqa: E402
from worker_harness import rabbitmqctl, require_rabbitmqctl, running_worker, settings_for, state  # noqa: E402

from worker.broker.link import BrokerLink, TopologyConflict  # noqa: E402
from worker.client.jobs import JobClient  # noqa: E402
from worker.client.maze_client import MazeClient  # noqa: E402
from worker.jobs.codec import encode_event  # noqa: E402
from worker.jobs.schema import JobEvent, JobKind, JobMessage  # noqa: E402
from worker.wire import declarations, topology  # noqa: E402
from worker.wire.protocol import CONTENT_TYPE  # noqa: E402

pytestmark = pytest.mark.integration

DEFINITIONS = Path(__file__).resolve().parents[2] / "deploy" / "rabbitmq" / "definitions.json"
ROLES = ("worker", "producer", "submitter", "monitor")
OLD_SHARD_ARGUMENTS = ("x-queue-type", "x-single-active-consumer", "x-dead-letter-exchange")
"""What shard queues were declared with before the limits."""


# ---------------------------------------------------------------- helpers (the soak test uses them too)


def named_connection(url: str, name: str) -> pika.BlockingConnection:
    """A connection whose client-provided name is ``name`` (so rabbitmqctl can tell it is our broker)."""
    parameters = pika.URLParameters(url)
    parameters.client_properties = {"connection_name": name}
    parameters.connection_attempts = 1
    parameters.socket_timeout = 5
    return pika.BlockingConnection(parameters)


def broker_setting(key: str) -> int:
    """An integer setting of the running broker (``application:get_env(rabbit, key)``)."""
    output = rabbitmqctl("eval", f"application:get_env(rabbit, {key}).", timeout=30).strip()
    assert output.startswith("{ok,") and output.endswith("}"), f"rabbit {key}: {output!r}"
    return int(output[4:-1])


def set_broker_setting(key: str, value: int) -> None:
    rabbitmqctl("eval", f"application:set_env(rabbit, {key}, {int(value)}).", timeout=30)


def channel_with_message_limit(connection: pika.BlockingConnection, limit: int) -> BlockingChannel:
    """A channel on which the broker refuses messages over ``limit`` bytes, as one configured with
    deploy/rabbitmq/20-maze.conf does; other channels keep the broker's own setting.

    The caller has checked with ``require_rabbitmqctl`` that rabbitmqctl reaches this broker.
    """
    configured = broker_setting("max_message_size")
    if configured <= limit:
        return connection.channel()
    set_broker_setting("max_message_size", limit)
    try:
        return connection.channel()
    finally:
        set_broker_setting("max_message_size", configured)


def local_broker(url: str) -> pika.BlockingConnection:
    """A connection to the tests' broker, skipping the test unless rabbitmqctl reaches that same broker."""
    if shutil.which("rabbitmqctl") is None:
        pytest.skip("rabbitmqctl is not available")
    name = f"maze-limits-{uuid.uuid4().hex[:10]}"
    connection = named_connection(url, name)
    require_rabbitmqctl(name)
    return connection


def publish_confirmed(channel: BlockingChannel, exchange: str, routing_key: str, body: bytes) -> bool:
    """Publish persistently on a confirm channel; whether the broker took it (False: nacked)."""
    try:
        channel.basic_publish(exchange, routing_key, body, pika.BasicProperties(delivery_mode=2))
    except pika.exceptions.NackError:
        return False
    return True


# ---------------------------------------------------------------- shard queue limits


def test_a_state_given_back_past_the_delivery_limit_is_dead_lettered(prefix: str,
                                                                     amqp_connection: Any) -> None:
    channel = amqp_connection.channel()
    declare_worker_topology(channel, prefix, 1)
    shard = topology.shard_queue(prefix, 0, 1)
    channel.basic_publish("", shard, b"poison", pika.BasicProperties(delivery_mode=2))
    counts = []
    for method, properties, _body in _deliveries(channel, shard, topology.SHARD_DELIVERY_LIMIT + 1):
        counts.append((properties.headers or {}).get(topology.DELIVERY_COUNT_HEADER, 0))
        channel.basic_nack(method.delivery_tag, requeue=True)
    # the header counts the deliveries given back before; the return past the limit dead-letters it
    assert counts == list(range(topology.SHARD_DELIVERY_LIMIT + 1))
    ((method, properties, body),) = _deliveries(channel, topology.dead_letter_queue(prefix), 1)
    channel.basic_ack(method.delivery_tag)
    assert body == b"poison"
    assert properties.headers["x-first-death-reason"] == "delivery_limit"
    assert properties.headers["x-first-death-queue"] == shard
    assert channel.queue_declare(shard, passive=True).method.message_count == 0


def _deliveries(channel: BlockingChannel, queue: str, count: int,
                timeout: float = 10.0) -> Iterator[tuple[Any, Any, bytes]]:
    """The next ``count`` deliveries from ``queue``, one at a time (a shard queue has a single active
    consumer, which quorum queues serve no basic.get); the caller settles each before the next."""
    inbox: list[tuple[Any, Any, bytes]] = []
    channel.basic_qos(prefetch_count=1)
    tag = channel.basic_consume(queue, lambda _ch, method, properties, body: inbox.append(
        (method, properties, body)))
    deadline = time.monotonic() + timeout
    for _ in range(count):
        while not inbox:
            assert time.monotonic() < deadline, f"{queue}: fewer than {count} deliveries within {timeout} s"
            channel.connection.process_data_events(time_limit=0.05)
        yield inbox.pop(0)
    channel.basic_cancel(tag)


def test_a_full_shard_refuses_new_states_and_keeps_the_waiting_ones(prefix: str,
                                                                    amqp_connection: Any) -> None:
    """Fills one shard, which nobody consumes, with bodies of ``MAX_STATE_BYTES`` (64 MiB in all)."""
    channel = amqp_connection.channel()
    declare_worker_topology(channel, prefix, 1)
    shard = topology.shard_queue(prefix, 0, 1)
    channel.confirm_delivery()
    size = topology.MAX_STATE_BYTES
    fits = topology.SHARD_MAX_BYTES // size
    taken = [publish_confirmed(channel, "", shard, index.to_bytes(4, "big") + bytes(size - 4))
             for index in range(fits + 2)]
    # RabbitMQ refuses once the waiting bytes exceed the limit, so one body more than fits goes in
    assert taken == [True] * (fits + 1) + [False]
    assert channel.queue_declare(shard, passive=True).method.message_count == fits + 1
    indices = []
    for method, _properties, body in _deliveries(channel, shard, fits + 1):
        indices.append(int.from_bytes(body[:4], "big"))
        channel.basic_ack(method.delivery_tag)
    assert indices == list(range(fits + 1))  # the waiting states, oldest first: nothing was dropped
    assert publish_confirmed(channel, "", shard, b"room again")
    channel.queue_purge(shard)
    assert channel.queue_declare(topology.dead_letter_queue(prefix), passive=True).method.message_count == 0


def test_shard_queues_declared_before_the_limits_conflict_until_recreated(amqp_url: str, prefix: str,
                                                                          amqp_connection: Any) -> None:
    """The upgrade path of docs/operations.md: the worker stops with TopologyConflict on old queues; a
    policy gives them the limits meanwhile; deleted, they are declared anew with the limits."""
    channel = amqp_connection.channel()
    shard = topology.shard_queue(prefix, 0, 1)
    old = {key: value for key, value in topology.shard_queue_arguments(prefix).items()
           if key in OLD_SHARD_ARGUMENTS}
    channel.queue_declare(shard, durable=True, arguments=old)
    link = BrokerLink(settings_for(amqp_url, prefix, shards=1).broker, "maze-limits-test")
    link.connect()
    try:
        with pytest.raises(TopologyConflict, match="x-delivery-limit|x-max-length-bytes|x-overflow"):
            link.declare(declarations.worker_topology(prefix, 1))
    finally:
        link.close()

    policy = f"{prefix}-limits"
    pattern = f"^{prefix.replace('.', '[.]')}[.]states[.][0-9]+$"
    rabbitmqctl("set_policy", "--apply-to", "queues", "--priority", "1", policy, pattern,
                json.dumps({"max-length-bytes": 1000, "overflow": "reject-publish"}))
    try:
        confirming = amqp_connection.channel()
        confirming.confirm_delivery()
        deadline = time.monotonic() + 10  # a policy reaches a quorum queue's members asynchronously
        while publish_confirmed(confirming, "", shard, bytes(600)):
            assert time.monotonic() < deadline, "the policy did not limit the old shard queue"
            time.sleep(0.1)
    finally:
        rabbitmqctl("clear_policy", policy)

    channel = amqp_connection.channel()
    channel.queue_delete(shard)
    link.connect()
    try:
        link.declare(declarations.worker_topology(prefix, 1))
    finally:
        link.close()


def test_the_broker_refuses_a_message_over_max_message_size(amqp_url: str, prefix: str) -> None:
    connection = local_broker(amqp_url)
    try:
        channel = channel_with_message_limit(connection, topology.BROKER_MAX_MESSAGE_BYTES)
        nowhere = f"{prefix}.nowhere"  # no queue: nothing is stored even when the broker takes it
        channel.basic_publish("", nowhere, bytes(topology.BROKER_MAX_MESSAGE_BYTES))
        connection.process_data_events(0.2)
        assert channel.is_open
        channel.basic_publish("", nowhere, bytes(topology.BROKER_MAX_MESSAGE_BYTES + 1))
        with pytest.raises(pika.exceptions.ChannelClosedByBroker) as closed:
            channel.queue_declare(nowhere, passive=True)  # the next call sees the channel closed
        assert closed.value.reply_code == 406 and "larger than configured max size" in closed.value.reply_text
    finally:
        connection.close()


# ---------------------------------------------------------------- least privilege


@contextlib.contextmanager
def defined_vhost() -> Iterator[tuple[str, dict[str, str]]]:
    """deploy/rabbitmq/definitions.json imported under a virtual host and user names of the test's own, each
    user given a fresh password; yields the vhost and role -> user. Everything is deleted afterwards."""
    if shutil.which("rabbitmqctl") is None:
        pytest.skip("rabbitmqctl is not available to import the definitions")
    definitions = json.loads(DEFINITIONS.read_text(encoding="utf-8"))
    (defined,) = [vhost["name"] for vhost in definitions["vhosts"]]
    vhost = f"maze-test-{uuid.uuid4().hex[:10]}"
    users = {role: f"{vhost}-{role}" for role in ROLES}
    text = json.dumps(definitions).replace(json.dumps(defined), json.dumps(vhost))
    for role, user in users.items():
        text = text.replace(json.dumps(f"{defined}-{role}"), json.dumps(user))
    password = uuid.uuid4().hex
    # rabbitmqctl reads the file in the broker's own process, which may run as another system user
    path = Path(f"/tmp/{vhost}.json")
    path.write_text(text, encoding="utf-8")
    path.chmod(0o644)
    try:
        rabbitmqctl("import_definitions", str(path))
        for user in users.values():
            rabbitmqctl("change_password", user, password)
        yield vhost, {role: f"amqp://{user}:{password}@" for role, user in users.items()}
    finally:
        path.unlink(missing_ok=True)
        subprocess.run(["rabbitmqctl", "-q", "delete_vhost", vhost], capture_output=True, timeout=60)
        for user in users.values():
            subprocess.run(["rabbitmqctl", "-q", "delete_user", user], capture_output=True, timeout=60)


def _url(base: str, credentials: str, vhost: str) -> str:
    """``base`` (the tests' broker URL) with other credentials and virtual host."""
    parts = pika.URLParameters(base)
    return f"{credentials}{parts.host}:{parts.port}/{vhost}"


def _refused(url: str, action: Any) -> str:
    """Run ``action(channel)`` on a fresh connection; the broker's refusal text (fails if it is allowed)."""
    connection = pika.BlockingConnection(pika.URLParameters(url))
    try:
        channel = connection.channel()
        channel.confirm_delivery()
        with pytest.raises(pika.exceptions.ChannelClosedByBroker) as refused:
            action(channel)
            channel.queue_declare("", exclusive=True)  # a round trip after the action: its refusal arrives
        assert refused.value.reply_code == 403, refused.value
        return str(refused.value.reply_text)
    finally:
        if connection.is_open:
            connection.close()


def test_definitions_give_each_role_only_what_it_needs(amqp_url: str) -> None:
    prefix = topology.DEFAULT_PREFIX  # the definitions are written for it; the vhost keeps it apart
    with defined_vhost() as (vhost, credentials):
        url = {role: _url(amqp_url, credentials[role], vhost) for role in ROLES}

        # the worker declares and serves with its user; the producer's real client gets an action
        link = BrokerLink(settings_for(url["worker"], prefix).broker, "maze-limits-jobs")
        link.connect()
        link.declare(declarations.jobs_topology(prefix))
        link.close()
        with running_worker(settings_for(url["worker"], prefix, shards=2)), \
                MazeClient(url["producer"], prefix=prefix, timeout=10) as client:
            assert client.act("least-privilege-1", 0, state(0.5)) == 1
            client.act("least-privilege-1", 1, state(-0.5), reward=1.0, done=True)

        # the producer cannot read or declare what is not its own, nor publish around the states exchange
        shard = topology.shard_queue(prefix, 0, 2)
        assert "access to queue" in _refused(url["producer"], lambda ch: ch.basic_get(shard))
        assert "access to queue" in _refused(url["producer"],
                                             lambda ch: ch.basic_consume(shard, lambda *a: None))
        assert "access to exchange" in _refused(url["producer"],
                                                lambda ch: ch.exchange_declare(f"{prefix}.mine", "fanout"))
        assert "amq.default" in _refused(url["producer"], lambda ch: ch.basic_publish("", shard, b"x"))
        assert "access to exchange" in _refused(
            url["producer"], lambda ch: ch.basic_publish(topology.dead_letter_exchange(prefix), "", b"x"))
        assert "access to queue" in _refused(url["producer"], lambda ch: ch.queue_delete(shard))

        # the submitter publishes a job and follows its events, published by the worker's user
        with JobClient(url["submitter"], prefix=prefix, timeout=10) as jobs:
            jobs.watch("least-privilege-job")
            jobs.submit(JobMessage("least-privilege-job", JobKind.TRAIN, "conf_train"))
            worker = pika.BlockingConnection(pika.URLParameters(url["worker"]))
            worker.channel().basic_publish(
                topology.events_exchange(prefix),
                topology.job_event_routing_key("least-privilege-job", JobEvent.ACCEPTED),
                encode_event("least-privilege-job", JobEvent.ACCEPTED),
                pika.BasicProperties(content_type=CONTENT_TYPE))
            worker.close()
            deadline = time.monotonic() + 10
            while not jobs.events:
                assert time.monotonic() < deadline, "the submitter got no event"
                jobs.poll(0.1)
            assert jobs.events[0]["event"] == "accepted"
        train = topology.jobs_queue(prefix, "train")
        checking = pika.BlockingConnection(pika.URLParameters(url["worker"]))
        message_count = checking.channel().queue_declare(train, passive=True).method.message_count
        checking.close()
        assert message_count == 1
        assert "access to queue" in _refused(url["submitter"], lambda ch: ch.basic_get(train))
        assert "access to exchange" in _refused(
            url["submitter"], lambda ch: ch.basic_publish(topology.states_exchange(prefix), "e", b"x"))
        assert "access to topic" in _refused(
            url["submitter"],
            lambda ch: ch.queue_bind(ch.queue_declare("", exclusive=True).method.queue,
                                     topology.events_exchange(prefix), "#"))
        assert "access to exchange" in _refused(
            url["submitter"], lambda ch: ch.basic_publish(topology.events_exchange(prefix), "job.x.started",
                                                          msgpack.packb({})))

        # the monitor user may connect (the management API needs that) and touch nothing
        assert "access to queue" in _refused(url["monitor"], lambda ch: ch.basic_get(shard))
