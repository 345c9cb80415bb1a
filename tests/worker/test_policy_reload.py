"""Hot reload against the real broker: episodes finish on the policy version they started on, new episodes
get the announced newer version, unusable versions are rejected, missed announcements are caught up after a
reconnect, and ``maze-worker policy=published_policy`` serves (or refuses to start without) a version."""

import subprocess
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from policy_harness import NAME, announce, metric, save_runs, serving, version_of  # noqa: E402
from worker_harness import (  # noqa: E402
    ROOT,
    Producer,
    close_connections,
    require_rabbitmqctl,
    start_subprocess_worker,
    state,
    wait_until,
)

from worker.client import MazeClient  # noqa: E402
from worker.policy_store.store import publish_policy  # noqa: E402

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return save_runs(tmp_path_factory.mktemp("runs"))


def test_running_episodes_keep_their_version_and_new_ones_get_the_announced_one(
        amqp_url: str, prefix: str, tmp_path: Path, runs: dict[str, Path]) -> None:
    publish_policy(tmp_path, NAME, runs["one"])
    with serving(amqp_url, prefix, tmp_path) as service:
        producer = Producer(amqp_url, prefix)
        try:
            assert metric(service, "maze_worker_policy_version") == 1
            assert version_of(producer, "old", 0) == 1
            two = publish_policy(tmp_path, NAME, runs["two"])
            announce(amqp_url, prefix, two)
            wait_until(lambda: metric(service, "maze_worker_policy_version") == 2, "version 2 not swapped in")
            assert version_of(producer, "old", 1) == 1
            assert version_of(producer, "new", 0) == 2
            assert version_of(producer, "new", 1) == 2
            with MazeClient(amqp_url, prefix, timeout=60) as client:
                episode = client.episode()
                episode.step(state(0.1))
                assert episode.policy_version == 2 and client.last_reply is not None
                assert client.last_reply.policy_version == 2
            # Corrupt (a garbled weights file) and incompatible (another env's spaces) versions are rejected.
            three = publish_policy(tmp_path, NAME, runs["one"])
            weights = three.path / "state_dict.pt"
            weights.write_bytes(b"garbage" + weights.read_bytes()[7:])
            announce(amqp_url, prefix, three)
            wait_until(lambda: metric(service, "maze_worker_policy_reloads_total", outcome="rejected") == 1,
                       "version 3 not rejected")
            four = publish_policy(tmp_path, NAME, runs["acrobot"])
            announce(amqp_url, prefix, four)
            wait_until(lambda: metric(service, "maze_worker_policy_reloads_total", outcome="rejected") == 2,
                       "version 4 not rejected")
            assert metric(service, "maze_worker_policy_version") == 2
            assert metric(service, "maze_worker_policy_reloads_total", outcome="loaded") == 1
            assert version_of(producer, "newer", 0) == 2
            assert version_of(producer, "old", 2) == 1
            final = producer.call("old", 3, state(0.1), done=True, timeout=60)
            assert final["error"] is None and final["policy_version"] == 1
        finally:
            producer.close()


def test_a_version_missed_while_disconnected_is_found_and_announcements_reach_the_new_connection(
        amqp_url: str, prefix: str, tmp_path: Path, runs: dict[str, Path]) -> None:
    publish_policy(tmp_path, NAME, runs["one"])
    with serving(amqp_url, prefix, tmp_path) as service:
        fragment = f"maze-worker {prefix} "
        require_rabbitmqctl(fragment)
        producer = Producer(amqp_url, prefix)
        try:
            assert version_of(producer, "a", 0) == 1
            publish_policy(tmp_path, NAME, runs["two"])  # never announced
            reconnects = metric(service, "maze_worker_reconnects_total") or 0
            assert close_connections(fragment) >= 1
            wait_until(lambda: (metric(service, "maze_worker_reconnects_total") or 0) > reconnects,
                       "the worker did not reconnect")
            wait_until(lambda: metric(service, "maze_worker_policy_version") == 2, "version 2 not found")
            assert version_of(producer, "b", 0) == 2
            announce(amqp_url, prefix, publish_policy(tmp_path, NAME, runs["one"]))
            wait_until(lambda: metric(service, "maze_worker_policy_version") == 3,
                       "version 3 not heard on the new connection")
            assert version_of(producer, "c", 0) == 3
        finally:
            producer.close()


def test_maze_worker_serves_a_published_policy_and_refuses_to_start_without_one(
        amqp_url: str, prefix: str, tmp_path: Path, runs: dict[str, Path]) -> None:
    overrides = ("policy=published_policy", f"policy.name={NAME}", f"artifact_root={tmp_path}")
    refused = subprocess.run([sys.executable, "-m", "worker.cli", f"broker.prefix={prefix}", *overrides],
                             cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert refused.returncode == 2, refused.stderr
    lines = [line for line in refused.stderr.splitlines() if line.startswith("maze-worker: error:")]
    assert len(lines) == 1 and f"policy.name: no version of policy '{NAME}' is published" in lines[0]
    publish_policy(tmp_path, NAME, runs["one"])
    process = start_subprocess_worker(amqp_url, prefix, *overrides)
    producer = Producer(amqp_url, prefix)
    try:
        assert version_of(producer, "cli", 0) == 1
        announce(amqp_url, prefix, publish_policy(tmp_path, NAME, runs["two"]))
        wait_until(lambda: version_of(producer, f"cli-{time.monotonic()}", 0) == 2,
                   "maze-worker did not switch to version 2", interval=0.2)
    finally:
        producer.close()
        assert process.terminate() == 0
