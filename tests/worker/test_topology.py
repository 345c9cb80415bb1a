"""Topology: names derived from the prefix, shard queue arguments, the declarative topology, URL masking."""

import pytest

from worker.wire import protocol, topology
from worker.wire.declarations import BindingSpec, worker_topology
from worker.wire.topology import (
    DEAD_DETAIL_HEADER,
    DEAD_FIELD_HEADER,
    DEAD_REASON_HEADER,
    SHARD_BINDING_WEIGHT,
    DeadReason,
    amqp_url,
    control_exchange,
    dead_letter_exchange,
    dead_letter_headers,
    dead_letter_queue,
    dead_letter_queue_arguments,
    events_exchange,
    jobs_queue,
    mask_url,
    policies_exchange,
    shard_queue,
    shard_queue_arguments,
    shard_queues,
    states_exchange,
    states_exchange_type,
)


def test_names_derive_from_the_prefix() -> None:
    assert states_exchange("maze") == "maze.states"
    assert states_exchange_type() == "x-consistent-hash"
    assert dead_letter_exchange("prod.eu") == "prod.eu.dead"
    assert dead_letter_queue("prod.eu") == "prod.eu.dead"
    assert jobs_queue("maze", "rollout") == "maze.jobs.rollout"
    assert events_exchange("maze") == "maze.events"
    assert control_exchange("maze") == "maze.control"
    assert policies_exchange("maze") == "maze.policies"


@pytest.mark.parametrize(("index", "shards", "name"), [
    (0, None, "maze.states.00"), (7, None, "maze.states.07"), (15, 16, "maze.states.15"),
    (99, None, "maze.states.99"),
    (99, 100, "maze.states.99"), (5, 101, "maze.states.005"), (100, 101, "maze.states.100"),
    (12, 1000, "maze.states.012"), (999, 1000, "maze.states.999"), (0, 1001, "maze.states.0000"),
])
def test_shard_queue_names_are_zero_padded(index: int, shards: int | None, name: str) -> None:
    assert shard_queue("maze", index, shards) == name


def test_shard_queues_default_to_sixteen_in_order() -> None:
    names = shard_queues("maze")
    assert len(names) == topology.DEFAULT_SHARDS == 16
    assert names[0] == "maze.states.00" and names[-1] == "maze.states.15"
    assert len({len(name) for name in shard_queues("maze", 150)}) == 1  # one width for all names


@pytest.mark.parametrize(("index", "shards", "field"), [
    (-1, None, "index"), (100, None, "index"), (16, 16, "index"), (1.0, None, "index"), (True, None, "index"),
    (0, 0, "shards"), (0, -3, "shards"),
])
def test_bad_shard_index_or_count_is_named(index: int, shards: int | None, field: str) -> None:
    with pytest.raises(ValueError, match=f"^{field}: expected"):
        shard_queue("maze", index, shards)


def test_shard_queues_rejects_a_bad_count() -> None:
    with pytest.raises(ValueError, match="^shards: expected a positive integer"):
        shard_queues("maze", 0)


@pytest.mark.parametrize("prefix", ["", ".maze", "amq.maze", "ma ze", "maze/x", "x" * 101, "mäze"])
def test_bad_prefix_is_rejected(prefix: str) -> None:
    with pytest.raises(ValueError, match="^prefix: expected"):
        states_exchange(prefix)


def test_bad_job_kind_is_rejected() -> None:
    with pytest.raises(ValueError, match="^kind: expected"):
        jobs_queue("maze", "a.b")


def test_shard_queue_arguments_make_bounded_single_consumer_quorum_queues_that_dead_letter() -> None:
    assert shard_queue_arguments("prod") == {"x-queue-type": "quorum", "x-single-active-consumer": True,
                                             "x-dead-letter-exchange": "prod.dead", "x-delivery-limit": 20,
                                             "x-max-length-bytes": 64 * 1024 * 1024,
                                             "x-overflow": "reject-publish"}


def test_dead_letter_queue_keeps_the_newest_dead_letters() -> None:
    assert dead_letter_queue_arguments() == {"x-queue-type": "quorum", "x-overflow": "drop-head",
                                             "x-max-length-bytes": 256 * 1024 * 1024}


def test_broker_limits_sit_above_the_largest_state() -> None:
    """A state the worker accepts gets through the broker with room to spare, and a full shard holds many."""
    assert topology.MAX_STATE_BYTES is protocol.MAX_STATE_BYTES
    assert topology.BROKER_MAX_MESSAGE_BYTES >= 4 * topology.MAX_STATE_BYTES
    assert topology.BROKER_MAX_MESSAGE_BYTES <= 512 * 1024 * 1024  # RabbitMQ refuses a larger setting
    assert topology.SHARD_MAX_BYTES >= 16 * topology.MAX_STATE_BYTES
    assert topology.DEAD_LETTER_MAX_BYTES >= 4 * topology.SHARD_MAX_BYTES


def test_worker_topology_binds_every_shard_with_weight_one() -> None:
    spec = worker_topology("t1", 4)
    assert [(e.name, e.type, e.durable) for e in spec.exchanges] == [("t1.dead", "fanout", True),
                                                                     ("t1.states", "x-consistent-hash", True)]
    assert [q.name for q in spec.queues] == ["t1.dead", "t1.states.00", "t1.states.01", "t1.states.02",
                                             "t1.states.03"]
    assert all(q.arguments == shard_queue_arguments("t1") for q in spec.queues[1:])
    assert spec.queues[0].arguments == dead_letter_queue_arguments()
    assert spec.bindings[0] == BindingSpec("t1.dead", "t1.dead", "")
    assert spec.bindings[1:] == tuple(BindingSpec(name, "t1.states", SHARD_BINDING_WEIGHT)
                                      for name in shard_queues("t1", 4))
    assert SHARD_BINDING_WEIGHT == "1"


def test_dead_letter_headers() -> None:
    assert dead_letter_headers(DeadReason.NO_REPLY_TO, "reply_to") == {
        DEAD_REASON_HEADER: "no_reply_to", DEAD_FIELD_HEADER: "reply_to"}
    headers = dead_letter_headers(DeadReason.BAD_MESSAGE, "body", "body: expected a msgpack map")
    assert headers == {"x-maze-dead-reason": "bad_message", "x-maze-dead-field": "body",
                       DEAD_DETAIL_HEADER: "body: expected a msgpack map"}
    assert all(type(value) is str for value in headers.values())


@pytest.mark.parametrize(("url", "masked"), [
    ("amqp://guest:guest@localhost:5672/%2F", "amqp://guest:****@localhost:5672/%2F"),
    ("amqps://user:s3cr%40t@broker.example.com/prod?heartbeat=30",
     "amqps://user:****@broker.example.com/prod?heartbeat=30"),
    ("amqp://user:pw@[::1]:5672/", "amqp://user:****@[::1]:5672/"),
    ("amqp://localhost/", "amqp://localhost/"),
    ("amqp://user@localhost/", "amqp://user@localhost/"),
    ("amqp://user:pw@host:notaport/", "<unparsable broker URL>"),
])
def test_mask_url_hides_the_password(url: str, masked: str) -> None:
    assert mask_url(url) == masked


def test_amqp_url_prefers_argument_then_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MAZE_AMQP_URL", raising=False)
    assert amqp_url() == "amqp://guest:guest@localhost:5672/%2F"
    monkeypatch.setenv("MAZE_AMQP_URL", "amqp://a:b@env-host/")
    assert amqp_url() == "amqp://a:b@env-host/"
    assert amqp_url("amqp://explicit/") == "amqp://explicit/"
