"""maze-worker against the real broker: concurrent episodes, replays, gaps, eviction, metrics and health."""

import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from worker.client import MazeClient
from worker.client.errors import OutOfOrder, UnknownEpisode
from worker.metrics import WorkerMetrics

sys.path.insert(0, str(Path(__file__).parent))
from worker_harness import Producer, SignPolicy, running_worker, settings_for, state, wait_until  # noqa: E402

pytestmark = pytest.mark.integration


def _http(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()


def test_many_concurrent_episodes_each_get_their_own_correct_actions(amqp_url: str, prefix: str) -> None:
    policy = SignPolicy()
    rng = np.random.default_rng(1)
    with running_worker(settings_for(amqp_url, prefix), policy):
        producer = Producer(amqp_url, prefix)
        episodes = [f"ep-{index}" for index in range(64)]
        steps = 25
        sent: dict[str, tuple[str, int, list[float]]] = {}
        for episode in episodes:
            value = state(rng.uniform(-1, 1), rng)
            sent[producer.send(episode, 0, value, reward=None)] = (episode, 0, value)
        answered = 0
        while sent:
            producer.connection.process_data_events(time_limit=0.05)
            for correlation_id in [cid for cid in sent if cid in producer.replies]:
                episode, seq, value = sent.pop(correlation_id)
                reply = producer.replies.pop(correlation_id)
                assert reply["error"] is None, reply
                assert (reply["episode"], reply["seq"]) == (episode, seq)
                expected = None if seq == steps else SignPolicy.expected(value)
                assert reply["action"] == expected, (episode, seq, value, reply)
                answered += 1
                if seq < steps:
                    value = state(rng.uniform(-1, 1), rng)
                    done = seq + 1 == steps
                    sent[producer.send(episode, seq + 1, value, done=done)] = (episode, seq + 1, value)
        producer.close()
    assert answered == 64 * (steps + 1)
    # Concurrent episodes were stepped together: some policy calls saw more than one state.
    assert max(policy.batch_sizes) > 1


def test_replays_gaps_and_unknown_episodes_through_the_client(amqp_url: str, prefix: str) -> None:
    with running_worker(settings_for(amqp_url, prefix)), MazeClient(amqp_url, prefix=prefix) as client:
        assert client.act("e", 0, state(0.5)) == 1
        assert client.act("e", 1, state(-0.5), reward=1.0) == 0
        # The same (episode, seq) again: the same reply, even for a different state.
        assert client.act("e", 1, state(0.7), reward=1.0) == 0
        with pytest.raises(OutOfOrder, match="expected 2"):
            client.act("e", 5, state(0.1), reward=1.0)
        assert client.act("e", 2, state(0.3), reward=1.0) == 1
        with pytest.raises(UnknownEpisode):
            client.act("nobody", 3, state(0.1), reward=1.0)
        assert client.act("e", 3, state(0.3), reward=1.0, done=True) is None
        with pytest.raises(UnknownEpisode, match="finished"):
            client.act("e", 4, state(0.3), reward=1.0)


def test_idle_episodes_are_evicted(amqp_url: str, prefix: str) -> None:
    with running_worker(settings_for(amqp_url, prefix, idle_timeout_s=0.5)) as worker, \
            MazeClient(amqp_url, prefix=prefix) as client:
        client.act("idle", 0, state(0.1))
        client.act("idle", 1, state(0.1), reward=1.0)
        wait_until(lambda: "idle" not in worker.service.table, "the idle episode was not evicted", 10)
        with pytest.raises(UnknownEpisode, match="without a state"):
            client.act("idle", 2, state(0.1), reward=1.0)
        assert worker.service.metrics.episodes_closed.labels("idle")._value.get() == 1


def test_metrics_and_health_endpoint(amqp_url: str, prefix: str, unused_port: int) -> None:
    settings = settings_for(amqp_url, prefix)
    settings = type(settings)(**{**settings.__dict__,
                                 "metrics": type(settings.metrics)(port=unused_port, host="127.0.0.1")})
    metrics = WorkerMetrics()
    with running_worker(settings, metrics=metrics) as worker, MazeClient(amqp_url, prefix=prefix) as client:
        base = f"http://127.0.0.1:{unused_port}"
        assert _http(f"{base}/healthz")[0] == 200
        client.act("m", 0, state(0.1))
        client.act("m", 1, state(0.1), reward=1.0)
        with pytest.raises(OutOfOrder):
            client.act("m", 9, state(0.1), reward=1.0)
        status, text = _http(f"{base}/metrics")
        assert status == 200
        values = _samples(text)
        assert values["maze_worker_states_total"] == 3
        assert values['maze_worker_errors_total{code="out_of_order"}'] == 1
        assert values["maze_worker_open_episodes"] == 1
        assert values["maze_worker_batch_size_count"] == 3
        assert values["maze_worker_handling_seconds_count"] == 3
        assert values["maze_worker_reconnects_total"] == 0
        assert _http(f"{base}/nothing")[0] == 404
        worker.service.stop()
        worker.thread.join(20)
    assert not metrics.healthy


def _samples(text: str) -> dict[str, float]:
    values: dict[str, Any] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            values[name] = float(value)
    return values
