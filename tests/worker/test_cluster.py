"""ShardCoordinator against a broker stand-in: passing shards on, handing episodes over, importing them,
taking episodes back when the connection breaks mid-hand-off, and which unknown episodes count as lost.

The stand-in records what the coordinator asks of the transport; the real broker is exercised by
test_scaling.py.
"""

import sys
from pathlib import Path
from typing import Any

import msgpack
import pytest

from worker.broker.agent_transport import BrokerConnectionLost, Delivery
from worker.cluster import handover
from worker.cluster.claims import EXPIRED_FOR_S, EpisodeClaims
from worker.cluster.coordinator import ShardCoordinator
from worker.cluster.membership import Heartbeat, decode_heartbeat, encode_heartbeat
from worker.cluster.ownership import assign, owned_by
from worker.episodes.handoff import encode_records
from worker.episodes.table import EpisodeTable
from worker.metrics import WorkerMetrics
from worker.serving.factory import build_factory
from worker.settings import BrokerSettings, ClusterSettings, EpisodeSettings, WorkerSettings
from worker.wire.protocol import StateMessage

sys.path.insert(0, str(Path(__file__).parent))
from cluster_harness import StepPatternWrapper, expected  # noqa: E402
from worker_harness import CARTPOLE, SignPolicy  # noqa: E402

SHARDS = 4
SETTINGS = WorkerSettings(broker=BrokerSettings(prefix="t", shards=SHARDS),
                          cluster=ClusterSettings(heartbeat_interval_s=1.0, liveness_timeout_s=4.0))


class Clock:
    """Advances a little on every reading, so waiting loops end."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        self.now += 0.01
        return self.now


class FakeTransport:
    """What ShardCoordinator uses of Transport, in memory; hand-off queues are shared between instances."""

    def __init__(self, handoffs: dict[str, list[bytes]]) -> None:
        self.consumers: dict[str, str] = {}
        self.nacked: list[int] = []
        self.handoffs = handoffs
        self.heartbeats: list[bytes] = []
        self.sent_heartbeats: list[bytes] = []
        self.fail_publish = False
        self._count = 0

    def declare_cluster(self, worker_id: str) -> None:
        pass

    def consume_queue(self, queue: str) -> str:
        self._count += 1
        tag = f"ctag-{self._count}"
        self.consumers[tag] = queue
        return tag

    def cancel_consumer(self, tag: str) -> list[Delivery]:
        del self.consumers[tag]
        return []

    def nack(self, tag: int) -> None:
        self.nacked.append(tag)

    def flush(self) -> None:
        pass

    def poll(self, timeout: float) -> list[Delivery]:
        return []

    def take_heartbeats(self) -> list[bytes]:
        taken, self.heartbeats = self.heartbeats, []
        return taken

    def publish_heartbeat(self, body: bytes) -> None:
        self.sent_heartbeats.append(body)

    def publish_handoff(self, queue: str, body: bytes) -> None:
        if self.fail_publish:
            raise BrokerConnectionLost("publishing hand-off records: connection lost")
        self.handoffs.setdefault(queue, []).append(body)

    def get_handoffs(self, queue: str) -> list[tuple[int, bytes]]:
        return list(enumerate(self.handoffs.pop(queue, []), start=1))

    def ack_handoff(self, tag: int) -> None:
        pass

    def tag_of(self, shard: int) -> str:
        return next(tag for tag, queue in self.consumers.items() if queue == f"t.states.{shard:02d}")


def coordinator(worker: str, handoffs: dict[str, list[bytes]], others: tuple[str, ...] = ()) \
        -> tuple[ShardCoordinator, FakeTransport, EpisodeTable]:
    transport = FakeTransport(handoffs)
    transport.heartbeats = [encode_heartbeat(Heartbeat(other)) for other in others]
    table = EpisodeTable(build_factory(SignPolicy(), CARTPOLE, [{"_target_": StepPatternWrapper}]),
                         EpisodeSettings())
    cluster = ShardCoordinator(SETTINGS, worker, transport, table, WorkerMetrics(),  # type: ignore[arg-type]
                               clock=Clock())
    assert cluster.connected() == []
    return cluster, transport, table


def delivery(transport: FakeTransport, shard: int, episode: str, tag: int) -> Delivery:
    return Delivery(tag=tag, body=b"", reply_to="r", correlation_id="c", content_type=None,
                    queue=f"t.states.{shard:02d}", routing_key=episode, redelivered=False, received=0.0,
                    properties=None, consumer_tag=transport.tag_of(shard))


def step(table: EpisodeTable, episode: str, seqs: range) -> list[Any]:
    return [msgpack.unpackb(table.handle([StateMessage(1, episode, seq, [0.0, 0.0, 0.0, 0.0],
                                                       None if seq == 0 else 1.0)])[0].body)["action"]
            for seq in seqs]


def test_a_worker_alone_owns_every_shard_and_stands_by_on_all() -> None:
    cluster, transport, _ = coordinator("a", {})
    assert cluster.owned == set(range(SHARDS))
    assert sorted(transport.consumers.values()) == [f"t.states.{index:02d}" for index in range(SHARDS)]
    assert transport.sent_heartbeats  # announced after listening


def test_deliveries_of_a_shard_it_does_not_own_are_passed_on() -> None:
    owners = assign(["a", "b"], SHARDS)
    foreign = next(shard for shard, owner in owners.items() if owner == "b")
    cluster, transport, _ = coordinator("a", {}, others=("b",))
    assert cluster.owned == set(owned_by(owners)["a"])
    tag = transport.tag_of(foreign)
    kept = cluster.admit([delivery(transport, foreign, "e1", 7), delivery(transport, foreign, "e2", 8)])
    assert kept == [] and transport.nacked == [7, 8] and tag not in transport.consumers
    cluster.clock.now += 2.0  # type: ignore[attr-defined]
    cluster.tick()  # subscribes again, at the back of the line
    assert transport.tag_of(foreign) != tag


def test_a_moving_shard_takes_its_episodes_to_the_new_owner() -> None:
    handoffs: dict[str, list[bytes]] = {}
    old, old_transport, old_table = coordinator("a", handoffs)
    moving = next(shard for shard, owner in assign(["a", "b"], SHARDS).items() if owner == "b")
    assert old.admit([delivery(old_transport, moving, "ep", 1)])
    step(old_table, "ep", range(5))
    old_transport.heartbeats.append(encode_heartbeat(Heartbeat("b")))
    old.tick()  # b joined: the shard is released with its episode
    assert "ep" not in old_table and handoffs[f"t.handoff.{moving:02d}"]
    assert f"t.states.{moving:02d}" not in old_transport.consumers.values()
    old.clock.now += 2.0  # type: ignore[attr-defined]
    old.tick()
    assert old_transport.tag_of(moving)  # a heartbeat interval later: a stand-by again
    new, new_transport, new_table = coordinator("b", handoffs, others=("a",))
    assert new.admit([delivery(new_transport, moving, "ep", 1)])  # first delivery: import, then answer
    assert "ep" in new_table and not handoffs.get(f"t.handoff.{moving:02d}")
    sample = new.metrics.registry.get_sample_value
    assert sample("maze_worker_episodes_handed_off_total", {"direction": "in"}) == 1
    assert old.metrics.registry.get_sample_value("maze_worker_episodes_handed_off_total",
                                                 {"direction": "out"}) == 1
    assert sample("maze_worker_live_workers") == 2 and sample("maze_worker_owned_shards") == SHARDS // 2
    assert sample("maze_worker_takeover_seconds_count") == 1
    assert step(new_table, "ep", range(5, 9)) == [expected(seq) for seq in range(5, 9)]


def test_episodes_stay_when_the_hand_off_cannot_be_published() -> None:
    cluster, transport, table = coordinator("a", {})
    moving = next(shard for shard, owner in assign(["a", "b"], SHARDS).items() if owner == "b")
    cluster.admit([delivery(transport, moving, "ep", 1)])
    step(table, "ep", range(3))
    transport.fail_publish = True
    transport.heartbeats.append(encode_heartbeat(Heartbeat("b")))
    with pytest.raises(BrokerConnectionLost):
        cluster.tick()
    assert "ep" in table  # replayed back in: a later hand-off sends it
    assert step(table, "ep", range(3, 6)) == [expected(seq) for seq in range(3, 6)]


def test_unknown_episodes_count_as_lost_only_on_shards_taken_over_among_others() -> None:
    alone, alone_transport, _ = coordinator("a", {})
    alone.admit([delivery(alone_transport, 0, "x", 1)])
    assert not alone.episode_shards.explains_loss(StateMessage(1, "x", 3, None))
    together, transport, _ = coordinator("a", {}, others=("b",))
    mine = min(together.owned)
    together.admit([delivery(transport, mine, "y", 1)])
    assert together.episode_shards.explains_loss(StateMessage(1, "y", 3, None))
    assert not together.episode_shards.explains_loss(StateMessage(1, "never-delivered", 3, None))


def claimed(beats: list[bytes]) -> list[tuple[str, int]]:
    return [claim for body in beats for claim in decode_heartbeat(body).claims]


def test_a_state_routed_to_another_worker_brings_its_episode_along() -> None:
    # After a broker restart the rebuilt hash ring may send an episode's states to another worker's shard.
    handoffs: dict[str, list[bytes]] = {}
    holder, holder_transport, holder_table = coordinator("a", handoffs, others=("b",))
    claimer, claimer_transport, claimer_table = coordinator("b", handoffs, others=("a",))
    old_shard, new_shard = min(holder.owned), min(claimer.owned)
    holder.admit([delivery(holder_transport, old_shard, "ep", 1)])
    step(holder_table, "ep", range(4))
    [held] = claimer.admit([delivery(claimer_transport, new_shard, "ep", 9)])
    assert claimer.hold_for_claim(held, "ep") and claimer.claims
    assert claimer.tick() == [] and claimed(claimer_transport.sent_heartbeats) == [("ep", new_shard)]
    holder_transport.heartbeats += claimer_transport.sent_heartbeats
    holder.tick()  # the holder hands the episode over to the claimed shard
    assert "ep" not in holder_table and handoffs[f"t.handoff.{new_shard:02d}"]
    assert claimer.tick() == [held] and not claimer.claims
    assert step(claimer_table, "ep", range(4, 8)) == [expected(seq) for seq in range(4, 8)]


def test_an_unanswered_claim_lets_its_state_go_on_as_lost() -> None:
    claimer, transport, _ = coordinator("b", {}, others=("a",))
    shard = min(claimer.owned)
    [held] = claimer.admit([delivery(transport, shard, "gone", 3)])
    assert claimer.hold_for_claim(held, "gone")
    assert claimer.tick() == []
    claimer.clock.now += SETTINGS.cluster.heartbeat_interval_s  # type: ignore[attr-defined]
    assert claimer.tick() == [held]
    # Handled per episodes.on_lost:
    assert claimer.episode_shards.explains_loss(StateMessage(1, "gone", 3, None))
    [again] = claimer.admit([delivery(transport, shard, "gone", 4)])
    assert not claimer.hold_for_claim(again, "gone")  # asked once: not held back a second time...
    claimer.clock.now += EXPIRED_FOR_S  # type: ignore[attr-defined]
    assert claimer.hold_for_claim(again, "gone")  # ...for a while


def test_claims_only_among_others_and_given_back_with_their_shard() -> None:
    alone, alone_transport, _ = coordinator("a", {})
    [state] = alone.admit([delivery(alone_transport, 0, "x", 1)])
    assert not alone.hold_for_claim(state, "x")  # nobody else could hold it
    claimer, transport, _ = coordinator("a", {}, others=("b",))
    moving = next(shard for shard, owner in assign(["a", "b", "d"], SHARDS).items()
                  if owner != "a" and shard in claimer.owned)
    [held] = claimer.admit([delivery(transport, moving, "y", 5)])
    assert claimer.hold_for_claim(held, "y")
    transport.heartbeats.append(encode_heartbeat(Heartbeat("d")))
    assert claimer.tick() == []  # d joined and owns the shard now: the held state goes back to the queue
    assert 5 in transport.nacked and not claimer.claims


def test_held_states_stay_within_half_the_prefetch_of_their_shard() -> None:
    clock = Clock()
    claims = EpisodeClaims(wait_s=1.0, max_held_per_shard=2, clock=clock)
    deliveries = [Delivery(tag=tag, body=b"", reply_to="r", correlation_id="c", content_type=None, queue="q",
                           routing_key=f"e{tag}", redelivered=False, received=0.0, properties=None)
                  for tag in range(4)]
    assert [claims.hold(f"e{d.tag}", 0, d) for d in deliveries[:3]] == [True, True, False]
    assert claims.hold("e3", 1, deliveries[3])  # another shard has room of its own
    assert len(claims.take_unsent()) == 3
    assert claims.ready(lambda episode: episode == "e0") == [deliveries[0]]
    assert claims.hold("e2", 0, deliveries[2])  # room again once a held state went on
    clock.now += 1.0
    assert sorted(d.tag for d in claims.ready(lambda episode: False)) == [1, 2, 3] and not claims


def test_hand_off_messages_stay_under_the_size_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    _, _, scratch = coordinator("x", {})
    step(scratch, "probe", range(5))
    one = len(encode_records(0, "a", scratch.export(["probe"])))  # the size of one episode's record
    monkeypatch.setattr(handover, "HANDOFF_MAX_BYTES", 2 * one + one // 2)  # two records per message
    handoffs: dict[str, list[bytes]] = {}
    old, old_transport, old_table = coordinator("a", handoffs)
    moving = next(shard for shard, owner in assign(["a", "b"], SHARDS).items() if owner == "b")
    episodes = [f"ep{number}" for number in range(6)]
    for tag, episode in enumerate(episodes, start=1):
        assert old.admit([delivery(old_transport, moving, episode, tag)])
        step(old_table, episode, range(5))
    old_transport.heartbeats.append(encode_heartbeat(Heartbeat("b")))
    old.tick()
    bodies = handoffs[f"t.handoff.{moving:02d}"]
    assert len(bodies) == 3 and all(len(body) <= handover.HANDOFF_MAX_BYTES for body in bodies)
    new, new_transport, new_table = coordinator("b", handoffs, others=("a",))
    assert new.admit([delivery(new_transport, moving, "ep3", 1)])
    assert all(episode in new_table for episode in episodes)
