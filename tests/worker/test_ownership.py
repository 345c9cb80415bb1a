"""Shard assignment: balanced, deterministic, few moves on membership changes; the membership live set."""

import itertools

import msgpack
import pytest

from worker.cluster.membership import (
    Heartbeat,
    HeartbeatError,
    Membership,
    decode_heartbeat,
    encode_heartbeat,
    new_worker_id,
)
from worker.cluster.ownership import assign, moves, owned_by


def ids(count: int) -> list[str]:
    return [f"worker-{index}" for index in range(count)]


@pytest.mark.parametrize(("shards", "workers"), [(1, 1), (1, 3), (4, 3), (8, 3), (16, 1), (16, 5), (16, 16),
                                                 (16, 20), (100, 7), (999, 13)])
def test_every_worker_owns_floor_or_ceil(shards: int, workers: int) -> None:
    assignment = assign(ids(workers), shards)
    assert sorted(assignment) == list(range(shards))
    counts = [len(owned_by(assignment).get(worker, [])) for worker in ids(workers)]
    assert sum(counts) == shards
    assert set(counts) <= {shards // workers, -(-shards // workers)}


def test_the_assignment_depends_on_the_set_only() -> None:
    workers = ids(5)
    expected = assign(workers, 16)
    for order in itertools.islice(itertools.permutations(workers), 20):
        assert assign(order, 16) == expected
    assert assign([*workers, workers[0]], 16) == expected


@pytest.mark.parametrize("shards", [8, 16, 64])
@pytest.mark.parametrize("workers", [1, 2, 3, 5, 8])
def test_joining_and_leaving_move_few_shards(shards: int, workers: int) -> None:
    before = assign(ids(workers), shards)
    joined = assign([*ids(workers), "newcomer"], shards)
    # At least what the newcomer must take; balancing over a changed floor may move a few more.
    need = len(owned_by(joined)["newcomer"])
    assert need == shards // (workers + 1) or need == -(-shards // (workers + 1))
    assert len(moves(before, joined)) <= need + workers
    left = assign(ids(workers)[1:] or ["other"], shards)
    gone = len(owned_by(before).get(ids(workers)[0], []))
    assert len(moves(before, left)) <= gone + workers


def test_shards_of_a_leaving_worker_go_to_the_others_and_the_rest_mostly_stay() -> None:
    before = assign(ids(4), 16)
    after = assign(ids(4)[:3], 16)
    kept = [shard for shard in range(16) if before[shard] != "worker-3" and before[shard] == after[shard]]
    assert len(kept) >= 10
    assert "worker-3" not in after.values()


@pytest.mark.parametrize(("workers", "shards", "field"), [([], 4, "workers"), (["a", ""], 4, "workers"),
                                                          (["a"], 0, "shards"), (["a"], 2.0, "shards")])
def test_bad_input_names_the_argument(workers: list[str], shards: int, field: str) -> None:
    with pytest.raises(ValueError, match=f"^{field}:"):
        assign(workers, shards)


# ------------------------------------------------------------------------------------------------ membership

class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_heartbeats_make_workers_live_until_they_stop_or_leave() -> None:
    clock = Clock()
    members = Membership("me", liveness_timeout_s=4.0, clock=clock)
    assert members.live() == {"me"}
    members.observe(Heartbeat("a"))
    members.observe(Heartbeat("b"))
    members.observe(Heartbeat("me"))
    assert members.live() == {"me", "a", "b"} and members.others() == {"a", "b"}
    clock.now += 3.0
    members.observe(Heartbeat("a"))
    clock.now += 2.0
    assert members.expire() == ["b"]
    assert members.live() == {"me", "a"}
    members.observe(Heartbeat("a", leaving=True))
    assert members.live() == {"me"}
    members.observe(Heartbeat("c"))
    clock.now += 10.0
    members.refresh_all()  # after an outage of our own, the others get a new timeout
    assert members.expire() == [] and members.live() == {"me", "c"}
    members.leave()
    assert members.live() == {"c"} and members.leaving


def test_heartbeat_encoding_round_trips_and_rejects_junk() -> None:
    beat = Heartbeat(new_worker_id(), leaving=True)
    assert decode_heartbeat(encode_heartbeat(beat)) == beat
    claiming = Heartbeat("w", claims=(("episode-1", 3), ("episode-2", 0)))
    assert decode_heartbeat(encode_heartbeat(claiming)) == claiming
    for claims in ({"e": 1}, [["e"]], [["e", -1]], [[1, 2]]):
        with pytest.raises(HeartbeatError, match="^claims:"):
            decode_heartbeat(msgpack.packb({"v": 1, "worker": "w", "claims": claims}))
    for body, field in [(b"\xc1", "body"), (b"\x90", "v"), (b'\x82\xa1v\x01\xa6worker\x01', "worker"),
                        (b'\x83\xa1v\x01\xa6worker\xa1a\xa7leaving\x01', "leaving")]:
        with pytest.raises(HeartbeatError, match=f"^{field}:"):
            decode_heartbeat(body)


def test_worker_ids_fit_the_queue_names() -> None:
    from worker.wire import topology

    worker = new_worker_id()
    assert topology.worker_queue("maze", worker).startswith("maze.workers.")
    assert new_worker_id() != worker


# -------------------------------------------------------------------------------------------------- settings

def test_cluster_and_on_lost_settings_are_read_and_checked() -> None:
    from maze_engine.core.errors import ConfigError
    from worker.settings import WorkerSettings

    settings = WorkerSettings.from_config({"cluster": {"heartbeat_interval_s": 0.5, "liveness_timeout_s": 2},
                                           "episodes": {"on_lost": "error"}})
    assert (settings.cluster.heartbeat_interval_s, settings.cluster.liveness_timeout_s) == (0.5, 2.0)
    assert settings.episodes.on_lost == "error"
    defaults = WorkerSettings.from_config({})
    assert defaults.episodes.on_lost == "resume" and defaults.broker.heartbeat_s == 5
    for config, key in [({"episodes": {"on_lost": "drop"}}, "episodes.on_lost"),
                        ({"cluster": {"heartbeat_interval_s": 0}}, "cluster.heartbeat_interval_s"),
                        ({"cluster": {"liveness_timeout_s": "4"}}, "cluster.liveness_timeout_s"),
                        ({"cluster": {"heartbeat_interval_s": 2, "liveness_timeout_s": 3}},
                         "cluster.liveness_timeout_s"),
                        ({"cluster": 5}, "cluster")]:
        with pytest.raises(ConfigError, match=f"^{key}: expected"):
            WorkerSettings.from_config(config)
