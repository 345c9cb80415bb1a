"""Canary releases: the release state and its bad input (no broker), sticky canary choice, the Welch gate, and
against the real broker release / promote / rollback / status through ``maze-worker policies`` and the
automatic gate with scripted policies of known quality (one always pushes right, one always left)."""

import json
import sys
from pathlib import Path
from typing import Any

import msgpack
import pika
import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from policy_harness import NAME, metric, save_run, serving  # noqa: E402
from worker_harness import Producer, state, wait_until  # noqa: E402

from worker.episodes.sources import PolicySources, canary_bucket  # noqa: E402
from worker.policies_cli import policies_command, status_of  # noqa: E402
from worker.policy_store import releases  # noqa: E402
from worker.policy_store.canary_gate import CanaryGate, Tally, welch_lower  # noqa: E402
from worker.policy_store.store import publish_policy  # noqa: E402

# -------------------------------------------------------------------------------------------- no broker


def scripted_run(run_dir: Path, action: int) -> Path:
    """A CartPole policy that takes ``action`` (0: left, 1: right) whatever it sees."""
    save_run(run_dir)
    weights = torch.load(run_dir / "state_dict.pt", weights_only=True)
    weights["policy"]["0.heads.action.weight"].zero_()
    weights["policy"]["0.heads.action.bias"].copy_(torch.tensor([-20.0, 20.0] if action else [20.0, -20.0]))
    torch.save(weights, run_dir / "state_dict.pt")
    return run_dir


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("scripted")
    return {"right": scripted_run(base / "right", 1), "left": scripted_run(base / "left", 0)}


@pytest.fixture
def root(tmp_path: Path, runs: dict[str, Path]) -> Path:
    """Versions 1 (right), 2 (left), 3 (right) of NAME."""
    for run in ("right", "left", "right"):
        publish_policy(tmp_path, NAME, runs[run])
    return tmp_path


@pytest.mark.parametrize(("change", "message"), [
    (lambda root: releases.release_canary(root, "nothing", 2, 0.1), r"^name: no policy 'nothing'"),
    (lambda root: releases.release_canary(root, NAME, 9, 0.1), r"^version: .* no published version 9"),
    (lambda root: releases.release_canary(root, NAME, 2, 0.0), r"^canary: expected a share .* got 0.0"),
    (lambda root: releases.release_canary(root, NAME, 2, 1.0), r"^canary: expected a share .* got 1.0"),
    (lambda root: releases.release_canary(root, NAME, 2, -0.5), r"^canary: expected a share"),
    (lambda root: releases.promote(root, NAME, 7), r"^version: 'cartpole' has no published version 7"),
    (lambda root: releases.rollback(root, NAME), r"nothing to roll back"),
    (lambda root: releases.release_canary(root, NAME, 2, 0.1, releases.AutoGate(1, 0.95)),
     r"^min_episodes: expected an integer >= 2"),
    (lambda root: releases.release_canary(root, NAME, 2, 0.1, releases.AutoGate(10, 1.0)),
     r"^confidence: expected a number in \[0.5, 1\)"),
])
def test_bad_release_changes_name_the_culprit_and_change_nothing(root: Path, change: Any,
                                                                 message: str) -> None:
    with pytest.raises(releases.ReleaseError, match=message):
        change(root)
    assert releases.read_release(root, NAME) is None


def test_release_promote_rollback_and_a_second_canary(root: Path) -> None:
    state = releases.release_canary(root, NAME, 2, 0.25, releases.AutoGate(20, 0.9))
    assert (state.stable, state.canary, state.share, state.generation) == (3, 2, 0.25, 1)
    before = releases.release_path(root, NAME).read_bytes()
    with pytest.raises(releases.ReleaseError, match=r"version 2 already runs as a canary for 0.25"):
        releases.release_canary(root, NAME, 1, 0.1)
    with pytest.raises(releases.ReleaseError, match=r"version: 1 is not the canary of 'cartpole'"):
        releases.promote(root, NAME, 1)
    assert releases.release_path(root, NAME).read_bytes() == before
    state = releases.promote(root, NAME, 2)
    assert (state.stable, state.canary, state.previous, state.generation) == (2, None, 3, 2)
    assert state.last_decision is not None and state.last_decision["action"] == "promote"
    state = releases.rollback(root, NAME)  # no canary: back to the stable before the promotion
    assert (state.stable, state.previous) == (3, None)
    state = releases.release_canary(root, NAME, 1, 0.5)
    state = releases.rollback(root, NAME)
    assert (state.stable, state.canary) == (3, None)
    assert releases.decide(root, NAME, state.generation - 1, "promote", "test", "", {}) is None
    with pytest.raises(releases.ReleaseError, match=r"^version: 3 is already the stable version"):
        releases.release_canary(root, NAME, 3, 0.1)


def test_the_gate_decision_is_taken_once_per_generation(root: Path) -> None:
    state = releases.release_canary(root, NAME, 2, 0.5, releases.AutoGate(5, 0.95))
    first = releases.decide(root, NAME, state.generation, "rollback", "worker a", "worse", {"p_value": 0.01})
    assert first is not None and first.canary is None and first.stable == 3
    assert releases.decide(root, NAME, state.generation, "promote", "worker b", "not worse", {}) is None
    assert releases.read_release(root, NAME) == first


def test_the_canary_choice_is_sticky_and_near_its_share() -> None:
    stable, canary = object(), object()
    sources = PolicySources(stable)  # type: ignore[arg-type]
    sources.serve(stable, canary, 0.2)  # type: ignore[arg-type]
    ids = [f"episode-{number}" for number in range(20_000)]
    chosen = [sources.for_new(episode) is canary for episode in ids]
    assert 0.19 < sum(chosen) / len(ids) < 0.21
    assert chosen == [sources.for_new(episode) is canary for episode in ids]  # the same on every call
    assert all((canary_bucket(episode) < 0.2) == got for episode, got in zip(ids, chosen, strict=True))


@pytest.mark.parametrize(("canary", "stable", "action"), [
    ([0.0, 1.0, 0.0, 1.0, 0.0, 1.0], [5.0, 6.0, 5.0, 6.0, 5.0, 6.0], "rollback"),
    ([5.0, 6.0, 5.0, 6.0, 5.0, 6.0], [0.0, 1.0, 0.0, 1.0, 0.0, 1.0], "promote"),
    ([5.0, 6.0, 5.0, 6.0, 5.0, 6.0], [5.1, 6.0, 5.0, 6.1, 5.0, 6.0], "promote"),  # not significantly worse
    ([3.0] * 6, [3.0] * 6, "promote"),
    ([2.0] * 6, [3.0] * 6, "rollback"),
])
def test_the_gate_promotes_unless_the_canary_is_significantly_worse(
        canary: list[float], stable: list[float], action: str) -> None:
    gate = CanaryGate(stable=1, canary=2, min_episodes=6, confidence=0.95)
    for canary_return, stable_return in zip(canary[:-1], stable[:-1], strict=True):
        gate.observe(2, canary_return)
        gate.observe(1, stable_return)
        gate.observe(7, -100.0)  # another version is not counted
    assert gate.verdict() is None
    gate.observe(2, canary[-1])
    gate.observe(1, stable[-1])
    verdict = gate.verdict()
    assert verdict is not None and verdict.action == action, verdict
    assert verdict.figures["canary"]["episodes"] == 6 and verdict.figures["stable"]["version"] == 1


def test_welch_against_hand_computed_figures() -> None:
    a, b = Tally(), Tally()
    for value in (1.0, 2.0, 3.0, 4.0):
        a.add(value)
    for value in (3.0, 4.0, 5.0, 6.0, 7.0):
        b.add(value)
    t, df, p = welch_lower(a, b)
    # means 2.5 and 5, variances 5/3 and 2.5: t = -2.5 / sqrt(5/12 + 1/2), and Welch-Satterthwaite's
    # df = (5/12 + 1/2)^2 / ((5/12)^2 / 3 + (1/2)^2 / 4) = 6.98
    assert t == pytest.approx(-2.611165, rel=1e-5)
    assert df == pytest.approx(6.980769, rel=1e-5)
    assert p == pytest.approx(0.01748, abs=2e-4)


def test_a_training_job_publishes_straight_into_a_canary(tmp_path: Path, runs: dict[str, Path]) -> None:
    from test_policy_gate import RecordingTransport, finished

    from worker.jobs.codec import decode_job, encode_job, new_job
    from worker.jobs.publishing import publish_trained_policy
    from worker.jobs.records import JobRecords
    from worker.policy_store.announcements import ReleaseAnnouncement, decode_any

    records, transport = JobRecords(tmp_path), RecordingTransport()
    publish_policy(tmp_path, NAME, runs["right"])
    job = new_job("canary", "train", publish_policy=NAME, canary=0.1, canary_auto=True, canary_min_episodes=8)
    assert decode_job(encode_job(job)) == job
    result = publish_trained_policy(job, finished("canary", runs["left"], None), records,
                                    transport, "prefix")  # type: ignore[arg-type]
    assert result.policy is not None and result.policy["version"] == 2 and result.policy["canary"] == 2
    state = releases.read_release(tmp_path, NAME)
    assert state is not None and (state.stable, state.canary, state.share) == (1, 2, 0.1)
    assert state.auto == releases.AutoGate(8, 0.95)
    assert [decode_any(body) for _, _, body in transport.published] == [
        ReleaseAnnouncement(NAME, state.generation)]
    # Another canary while this one runs: published, but not released, and nothing served changes.
    again = publish_trained_policy(new_job("again", "train", publish_policy=NAME, canary=0.2),
                                   finished("again", runs["right"], None), records,
                                   transport, "prefix")  # type: ignore[arg-type]
    assert again.policy is not None and again.policy["canary"] is None
    assert "not released as a canary, nothing served changes" in again.policy["message"]
    assert releases.read_release(tmp_path, NAME) == state and len(transport.published) == 1


def test_a_training_job_publishes_straight_into_a_shadow(tmp_path: Path, runs: dict[str, Path]) -> None:
    from test_policy_gate import RecordingTransport, finished

    from worker.jobs.codec import decode_job, encode_job, new_job
    from worker.jobs.publishing import publish_trained_policy
    from worker.jobs.records import JobRecords
    from worker.policy_store.announcements import ReleaseAnnouncement, decode_any

    records, transport = JobRecords(tmp_path), RecordingTransport()
    publish_policy(tmp_path, NAME, runs["right"])
    job = new_job("shadow", "train", publish_policy=NAME, shadow=True)
    assert decode_job(encode_job(job)) == job
    result = publish_trained_policy(job, finished("shadow", runs["left"], None), records,
                                    transport, "prefix")  # type: ignore[arg-type]
    assert result.policy is not None and result.policy["version"] == 2 and result.policy["shadow"] == 2
    state = releases.read_release(tmp_path, NAME)
    assert state is not None and (state.stable, state.canary, state.shadow) == (1, None, 2)
    assert [decode_any(body) for _, _, body in transport.published] == [
        ReleaseAnnouncement(NAME, state.generation)]
    again = publish_trained_policy(new_job("again", "train", publish_policy=NAME, shadow=True),
                                   finished("again", runs["right"], None), records,
                                   transport, "prefix")  # type: ignore[arg-type]
    assert again.policy is not None and again.policy["shadow"] is None
    assert "not run in shadow, nothing served changes" in again.policy["message"]
    assert releases.read_release(tmp_path, NAME) == state and len(transport.published) == 1


@pytest.mark.parametrize(("fields", "field"), [
    ({"shadow": True}, "shadow"),  # without publish_policy
    ({"publish_policy": NAME, "shadow": "yes"}, "shadow"),
    ({"publish_policy": NAME, "shadow": True, "canary": 0.1}, "shadow"),
    ({"canary": 0.1}, "canary"),  # without publish_policy
    ({"publish_policy": NAME, "canary": 1.0}, "canary"),
    ({"publish_policy": NAME, "canary": True}, "canary"),
    ({"publish_policy": NAME, "canary_auto": True}, "canary_auto"),
    ({"publish_policy": NAME, "canary": 0.1, "canary_auto": "yes"}, "canary_auto"),
    ({"publish_policy": NAME, "canary": 0.1, "canary_auto": True, "canary_min_episodes": 1},
     "canary_min_episodes"),
    ({"publish_policy": NAME, "canary": 0.1, "canary_min_episodes": 10}, "canary_min_episodes"),
])
def test_bad_canary_fields_of_a_job_name_the_field(fields: dict[str, Any], field: str) -> None:
    from worker.jobs.codec import JobDecodeError, decode_job

    with pytest.raises(JobDecodeError, match=rf"^{field}: expected") as caught:
        decode_job(msgpack.packb({"v": 1, "job_id": "j", "kind": "train", **fields}))
    assert caught.value.field == field


# ----------------------------------------------------------------------------------------- the real broker

pytest_integration = pytest.mark.integration


def play(producer: Producer, episodes: list[str], steps: int = 4) -> dict[str, list[Any]]:
    """Play ``episodes`` at once for ``steps`` steps and a final state; the reward is 1 when the previous
    action pushed right (so the right-pushing policy earns ``steps``, the left-pushing one 0). Returns each
    episode's ``policy_version`` per reply; no reply may be an error."""
    versions: dict[str, list[Any]] = {episode: [] for episode in episodes}
    actions: dict[str, Any] = {}
    for seq in range(steps + 1):
        ids = [producer.send(episode, seq, state(0.1), reward=None if seq == 0 else
                             float(actions[episode] == 1), done=seq == steps) for episode in episodes]
        for episode, reply in zip(episodes, producer.wait(ids, timeout=60), strict=True):
            assert reply["error"] is None, reply
            versions[episode].append(reply["policy_version"])
            actions[episode] = reply["action"]
    return versions


def cli(root: Path, amqp_url: str, prefix: str, *args: str) -> int:
    return policies_command([*args, "--artifact-root", str(root), "--url", amqp_url, "--prefix", prefix])


@pytest_integration
def test_release_promote_rollback_and_status_across_the_served_episodes(
        amqp_url: str, prefix: str, root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with serving(amqp_url, prefix, root) as service:
        producer = Producer(amqp_url, prefix)
        try:
            assert metric(service, "maze_worker_policy_version") == 3
            assert cli(root, amqp_url, prefix, "release", NAME, "2", "--canary", "0.5") == 0
            wait_until(lambda: metric(service, "maze_worker_canary_version") == 2, "the canary not served")
            assert cli(root, amqp_url, prefix, "release", NAME, "1", "--canary", "0.1") == 2
            assert "already runs as a canary" in capsys.readouterr().err
            episodes = [f"a-{number}" for number in range(24)]
            opened = play(producer, episodes, steps=1)  # opened and finished under the canary
            for episode, versions in opened.items():
                assert set(versions) == {2 if canary_bucket(episode) < 0.5 else 3}, (episode, versions)
            # Open episodes on both versions, promote, and they finish on the version they started on.
            first = {episode: producer.call(episode, 0, state(0.1))["policy_version"]
                     for episode in ("b-1", "b-2", "b-3", "b-4", "b-5", "b-6")}
            assert set(first.values()) <= {2, 3}
            assert cli(root, amqp_url, prefix, "promote", NAME, "2") == 0
            wait_until(lambda: metric(service, "maze_worker_policy_version") == 2
                       and metric(service, "maze_worker_canary_version") == 0, "the promotion not served")
            for episode, version in first.items():
                assert producer.call(episode, 1, state(0.1), reward=1.0)["policy_version"] == version
                assert producer.call(episode, 2, state(0.1), done=True)["policy_version"] == version
            assert set(sum(play(producer, ["c-1", "c-2", "c-3"], steps=1).values(), [])) == {2}
            assert cli(root, amqp_url, prefix, "rollback", NAME) == 0
            wait_until(lambda: metric(service, "maze_worker_policy_version") == 3, "the rollback not served")
            assert set(sum(play(producer, ["d-1", "d-2"], steps=1).values(), [])) == {3}
            assert metric(service, "maze_worker_version_episodes_total", policy_version="2") is not None
        finally:
            producer.close()
        url = f"http://127.0.0.1:{metrics_port(service)}/metrics" if metrics_port(service) else None
        report = status_of(str(root), NAME, [url] if url else [])
    assert report["release"]["stable"] == 3 and report["release"]["last_decision"]["action"] == "rollback"
    assert report["versions"]["stable"]["version"] == 3
    capsys.readouterr()
    assert policies_command(["status", NAME, "--artifact-root", str(root)]) == 0
    assert "last decision: rollback" in capsys.readouterr().out
    assert policies_command(["status", "nothing", "--artifact-root", str(root)]) == 2


def metrics_port(service: Any) -> int | None:
    server = getattr(service, "_metrics_server", None)
    return None if server is None else server.port


@pytest_integration
def test_the_automatic_gate_rolls_a_worse_canary_back_and_promotes_a_better_one(
        amqp_url: str, prefix: str, tmp_path: Path, runs: dict[str, Path], broker_cleanup: Any) -> None:
    publish_policy(tmp_path, NAME, runs["left"])  # 1: earns nothing
    publish_policy(tmp_path, NAME, runs["right"])  # 2: earns 4 per episode
    publish_policy(tmp_path, NAME, runs["left"])  # 3: worse than 2
    connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
    channel = connection.channel()
    channel.exchange_declare(f"{prefix}.events", exchange_type="topic", durable=True)
    events = broker_cleanup.queue(channel.queue_declare(f"{prefix}.test-events").method.queue)
    channel.queue_bind(events, f"{prefix}.events", routing_key=f"policy.{NAME}.*")
    releases.promote(tmp_path, NAME, 2)  # 2 serves as the stable version
    try:
        with serving(amqp_url, prefix, tmp_path) as service:
            producer = Producer(amqp_url, prefix)
            try:
                assert cli(tmp_path, amqp_url, prefix, "release", NAME, "3", "--canary", "0.5", "--auto",
                           "--min-episodes", "5") == 0
                wait_until(lambda: metric(service, "maze_worker_canary_version") == 3, "canary not served")
                batch = 0
                while releases.read_release(tmp_path, NAME).canary is not None:  # type: ignore[union-attr]
                    assert batch < 10, "no decision after 10 rounds of 16 episodes"
                    play(producer, [f"worse-{batch}-{number}" for number in range(16)])
                    batch += 1
                state = releases.read_release(tmp_path, NAME)
                assert state is not None and (state.stable, state.canary) == (2, None)
                assert state.last_decision is not None and state.last_decision["action"] == "rollback"
                assert state.last_decision["figures"]["canary"]["mean_return"] == 0.0
                wait_until(lambda: metric(service, "maze_worker_canary_version") == 0, "rollback not served")
                better = publish_policy(tmp_path, NAME, runs["right"])  # 4: as good as 2
                assert cli(tmp_path, amqp_url, prefix, "release", NAME, str(better.version), "--canary",
                           "0.5", "--auto", "--min-episodes", "5") == 0
                wait_until(lambda: metric(service, "maze_worker_canary_version") == 4, "canary not served")
                batch = 0
                while releases.read_release(tmp_path, NAME).canary is not None:  # type: ignore[union-attr]
                    assert batch < 10, "no decision after 10 rounds of 16 episodes"
                    play(producer, [f"better-{batch}-{number}" for number in range(16)])
                    batch += 1
                wait_until(lambda: metric(service, "maze_worker_policy_version") == 4, "promotion not served")
            finally:
                producer.close()
        received = []
        while True:
            method, _properties, body = channel.basic_get(events, auto_ack=True)
            if method is None:
                break
            received.append((method.routing_key, msgpack.unpackb(body)))
    finally:
        connection.close()
    keys = [key for key, _ in received]
    assert keys == [f"policy.{NAME}.released", f"policy.{NAME}.rolled_back", f"policy.{NAME}.released",
                    f"policy.{NAME}.promoted"], keys
    decision = received[1][1]
    assert decision["by"].startswith("worker ") and decision["figures"]["p_value"] < 0.05
    assert json.dumps(received[3][1]["figures"])  # the figures behind the promotion travel with it
