"""Job workers against the real broker: a training job from submission to result with events, idempotent
resubmission, bad job messages, cancellation (running and queued), the time limit, a rollout split over two
workers, a worker killed mid-job, a poison job, the CLI and ``role=all``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import msgpack
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from job_harness import (  # noqa: E402
    LONG_TRAINING,
    TINY_ROLLOUT,
    TINY_TRAINING,
    RecordingClient,
    crashing_env,
    dead_letters,
    job_settings,
    job_worker,
    publish_raw,
    register_cleanup,
)
from worker_harness import (  # noqa: E402
    ROOT,
    Producer,
    WorkerProcess,
    close_connections,
    start_subprocess_worker,
    state,
    wait_until,
)

from maze_engine.records.trajectory import trajectory_files  # noqa: E402
from worker.jobs.codec import new_job  # noqa: E402
from worker.jobs.records import JobRecords  # noqa: E402
from worker.jobs.schema import JobStatus  # noqa: E402
from worker.jobs.split import merge_statistics  # noqa: E402
from worker.jobs.submit import job_status  # noqa: E402
from worker.wire import topology  # noqa: E402

pytestmark = pytest.mark.integration


@pytest.fixture
def client(amqp_url: str, prefix: str) -> Any:
    client = RecordingClient(amqp_url, prefix)
    yield client
    client.close()


def test_a_training_job_runs_to_its_result_with_events_and_answers_a_resubmission_from_its_record(
        amqp_url: str, prefix: str, tmp_path: Path, broker_cleanup: Any, client: RecordingClient) -> None:
    with job_worker(job_settings(amqp_url, prefix, tmp_path), broker_cleanup):
        job = new_job("tiny-train", "train", TINY_TRAINING)
        client.watch(job.job_id)
        client.submit(job)
        result = client.result(job.job_id)
        assert result.status is JobStatus.FINISHED, result
        assert result.summary["epochs"] == 2
        assert isinstance(result.summary["best_eval_return"], float)
        output = Path(result.output_dir)
        assert output == tmp_path / "jobs" / "tiny-train" / "output"
        assert (output / "state_dict.pt").is_file() and (output / "config.yaml").is_file()
        names = [event["event"] for event in client.events_of(job.job_id)]
        assert names[:2] == ["accepted", "started"] and names[-1] == "finished", names
        epochs = client.events_of(job.job_id, "epoch")
        assert [event["epoch"] for event in epochs] == [1, 2]
        assert all(event["epochs"] == 2 and "episode_return" in event["stats"]["train"] for event in epochs)
        assert job_status(tmp_path, job.job_id)["status"] == "finished"

        started = (JobRecords(tmp_path).record(job.job_id) or {})["started"]
        client.submit(job)  # the same job id again: answered from the stored result, not run twice
        again = client.result(job.job_id, timeout=60)
        assert again.to_plain() == result.to_plain()
        assert (JobRecords(tmp_path).record(job.job_id) or {})["started"] == started
        assert len(client.events_of(job.job_id, "started")) == 1


def test_a_training_job_with_publish_policy_publishes_and_announces_the_policy(
        amqp_url: str, prefix: str, tmp_path: Path, broker_cleanup: Any, client: RecordingClient) -> None:
    from worker.policy_store.announcements import decode_announcement
    from worker.policy_store.store import latest_policy

    with job_worker(job_settings(amqp_url, prefix, tmp_path), broker_cleanup):
        announcements = client.channel.queue_declare("", exclusive=True).method.queue
        client.channel.queue_bind(announcements, topology.policies_exchange(prefix))
        job = new_job("train-and-publish", "train", TINY_TRAINING, publish_policy="cartpole")
        client.submit(job)
        result = client.result(job.job_id)
    assert result.status is JobStatus.FINISHED, result
    assert result.policy is not None and result.policy["published"] is True
    assert (result.policy["name"], result.policy["version"]) == ("cartpole", 1)
    published = latest_policy(tmp_path, "cartpole")
    assert published is not None and published.version == 1
    assert (published.path / "state_dict.pt").is_file()
    method, _properties, body = client.channel.basic_get(announcements, auto_ack=True)
    assert method is not None, "the new version is announced on <prefix>.policies"
    announcement = decode_announcement(body)
    assert (announcement.name, announcement.version) == ("cartpole", 1)
    assert announcement.resolve(tmp_path) == published.path


def test_bad_job_messages_are_answered_naming_the_field_and_dead_lettered(
        amqp_url: str, prefix: str, tmp_path: Path, broker_cleanup: Any, client: RecordingClient) -> None:
    def job(**changes: Any) -> bytes:
        body = {"v": 1, "job_id": "bad", "kind": "rollout", "overrides": TINY_ROLLOUT, **changes}
        return msgpack.packb(body)

    with job_worker(job_settings(amqp_url, prefix, tmp_path), broker_cleanup):
        cases = {  # job id -> (body, field named in the reply and the dead letter)
            "bad-kind": (job(job_id="bad-kind", kind="explode"), "kind"),
            "bad-override": (job(job_id="bad-override", overrides=["runner.n_episodes=many"]), "overrides"),
            "bad-group": (job(job_id="bad-group", overrides=["runner=nonexistent"]), "overrides[0]"),
            "bad-config": (job(job_id="bad-config", config="conf_nope"), "config"),
            "bad-pairing": (job(job_id="bad-pairing", config="conf_train"), "config"),
        }
        for body, _field in cases.values():
            publish_raw(client, "rollout", body)
        publish_raw(client, "rollout", b"\xc1 not msgpack")
        publish_raw(client, "rollout", job(job_id="no-reply"), reply_to=None)
        for job_id, (_body, field) in cases.items():
            result = client.result(job_id, timeout=60)
            assert result.status is JobStatus.FAILED and result.error is not None
            assert result.error.message.startswith(field), (job_id, result.error)
        # A config value the engine rejects only when it builds the env: failed once, never retried.
        env_error = new_job("bad-env", "rollout", [*TINY_ROLLOUT, "env.name=NoSuchEnv-v0"])
        client.submit(env_error)
        result = client.result(env_error.job_id)
        assert result.status is JobStatus.FAILED and result.error is not None
        assert (result.error.code, result.attempts) == ("config", 1)
        assert "NoSuchEnv-v0" in result.error.message
        good = new_job("good-after-bad", "rollout", [*TINY_ROLLOUT, "runner.n_episodes=2"])
        client.submit(good)
        assert client.result(good.job_id).status is JobStatus.FINISHED, "the worker keeps going"
    letters = dead_letters(client)
    reasons = sorted((props.headers[topology.DEAD_REASON_HEADER], props.headers[topology.DEAD_FIELD_HEADER])
                     for props, _body in letters)
    assert reasons == sorted([("bad_job", "kind"), ("bad_job", "overrides"), ("bad_job", "overrides[0]"),
                              ("bad_job", "config"), ("bad_job", "config"), ("bad_job", "body"),
                              ("no_reply_to", "reply_to"), ("bad_job", "overrides")]), reasons


def test_cancelling_a_running_and_a_queued_job_and_the_time_limit(
        amqp_url: str, prefix: str, tmp_path: Path, broker_cleanup: Any, client: RecordingClient) -> None:
    with job_worker(job_settings(amqp_url, prefix, tmp_path, kinds=("train",)), broker_cleanup):
        running = new_job("long-a", "train", LONG_TRAINING)
        queued = new_job("long-b", "train", LONG_TRAINING)
        for job in (running, queued):
            client.watch(job.job_id)
        client.submit(running)
        client.wait_event(running.job_id, "epoch")
        client.submit(queued)
        client.cancel(queued.job_id, "not needed")
        wait_until(lambda: JobRecords(tmp_path).cancellation(queued.job_id) is not None, "no cancel mark", 30)
        asked = time.monotonic()
        client.cancel(running.job_id)
        result = client.result(running.job_id, timeout=60)
        assert result.status is JobStatus.CANCELLED
        assert time.monotonic() - asked < 30, "a running job stops within seconds"
        assert client.events_of(running.job_id, "cancelled")
        later = client.result(queued.job_id, timeout=60)
        assert later.status is JobStatus.CANCELLED and later.error is not None
        assert later.error.message == "not needed"
        assert not client.events_of(queued.job_id, "started"), "a job cancelled while queued never starts"

        limited = new_job("limited", "train", LONG_TRAINING, time_limit_s=3)
        client.submit(limited)
        result = client.result(limited.job_id, timeout=90)
        assert result.status is JobStatus.FAILED and result.error is not None
        assert result.error.code == "time_limit"


def test_a_rollout_split_over_two_workers_merges_into_one_result(
        amqp_url: str, prefix: str, tmp_path: Path, broker_cleanup: Any, client: RecordingClient) -> None:
    settings = job_settings(amqp_url, prefix, tmp_path, kinds=("rollout",))
    with job_worker(settings, broker_cleanup) as first, job_worker(settings, broker_cleanup) as second:
        job = new_job("split", "rollout", [*TINY_ROLLOUT, "runner.n_episodes=7", "seed=11"], chunks=2)
        client.watch(job.job_id)
        client.submit(job)
        result = client.result(job.job_id)
        workers = {first.service.worker_id, second.service.worker_id}
    assert result.status is JobStatus.FINISHED, result
    records = JobRecords(tmp_path)
    chunk_ids = result.summary["chunk_ids"]
    assert len(chunk_ids) == 2
    chunks = [records.result(chunk_id) for chunk_id in chunk_ids]
    assert [c.summary["statistics"]["episode_return"]["count"] for c in chunks if c] == [4, 3]
    assert {(records.record(chunk_id) or {})["worker"] for chunk_id in chunk_ids} == workers, \
        "each worker ran a chunk"
    merged = result.summary["statistics"]
    assert merged["episode_return"]["count"] == 7
    expected = merge_statistics([c.summary["statistics"] for c in chunks if c])
    assert merged["episode_return"] == pytest.approx(expected["episode_return"])
    assert len(trajectory_files(tmp_path / "jobs" / "split" / "trajectories")) == 7
    done = [event["done"] for event in client.events_of(job.job_id, "chunk")]
    assert len(done) == 2 and max(done) == 2, done  # [2, 2] when both chunks end at the same moment


def test_cancelling_a_split_rollout_cancels_its_chunks_running_and_queued(
        amqp_url: str, prefix: str, tmp_path: Path, broker_cleanup: Any, client: RecordingClient) -> None:
    with job_worker(job_settings(amqp_url, prefix, tmp_path, kinds=("rollout",)), broker_cleanup):
        job = new_job("big-split", "rollout", [*TINY_ROLLOUT, "runner.n_episodes=30000", "seed=2",
                                               "runner.record_trajectory=false"], chunks=3)
        first = "big-split_chunk-1-of-3"
        client.watch(job.job_id)
        client.watch(first)
        client.submit(job)
        client.wait_event(first, "started")
        client.cancel(job.job_id, "enough")
        result = client.result(job.job_id, timeout=60)
        assert result.status is JobStatus.CANCELLED and result.error is not None
        assert result.error.message == "enough"
        records = JobRecords(tmp_path)
        chunk_ids = [f"big-split_chunk-{i}-of-3" for i in (1, 2, 3)]
        wait_until(lambda: all(records.result(c) is not None for c in chunk_ids), "a chunk not answered", 60)
        assert {records.result(c).status for c in chunk_ids} == {JobStatus.CANCELLED}  # type: ignore[union-attr]
        client.pump(1.0)
        assert len(client.answers_of(job.job_id)) == 1, "the split rollout is answered once"


def _start_job_worker(amqp_url: str, prefix: str, root: Path, *overrides: str) -> WorkerProcess:
    return start_subprocess_worker(amqp_url, prefix, "role=jobs", f"artifact_root={root}",
                                   "jobs.lease_ttl_s=3", "jobs.poll_interval_s=0.2", *overrides)


def test_a_job_whose_worker_is_killed_resumes_elsewhere_from_its_checkpoint_and_is_answered_once(
        amqp_url: str, prefix: str, tmp_path: Path, broker_cleanup: Any, client: RecordingClient) -> None:
    register_cleanup(broker_cleanup, prefix)
    victim = _start_job_worker(amqp_url, prefix, tmp_path)
    # Epochs long enough (16 updates) that the kill lands well before the last one, however fast the machine.
    job = new_job("survivor", "train", [*LONG_TRAINING[:-8], "algorithm.n_epochs=40",
                                        "algorithm.epoch_length=16", *LONG_TRAINING[-6:]])
    try:
        client.watch(job.job_id)
        client.submit(job)
        wait_until(lambda: len(client.events_of(job.job_id, "epoch")) >= 2, "no second epoch", 120,
                   step=lambda: client.pump(0.1))
    finally:
        victim.kill()  # kill -9 mid-training: the checkpoint of epoch 2 (or later) is on disk
    child = client.events_of(job.job_id, "started")[0]["pid"]
    wait_until(lambda: not _alive(child), "the killed worker's job process did not end", 30)
    record = JobRecords(tmp_path).record(job.job_id) or {}
    rescuer = _start_job_worker(amqp_url, prefix, tmp_path)
    try:
        result = client.result(job.job_id, timeout=240)
        assert result.status is JobStatus.FINISHED, result
        assert result.attempts == 2 and result.summary["epochs"] == 40, "exactly the configured epochs"
        client.pump(3.0)  # a second answer would arrive now
        assert len(client.answers_of(job.job_id)) == 1, "answered once"
        assert len(client.events_of(job.job_id, "finished")) == 1
        first, second = client.events_of(job.job_id, "started")
        assert first["resumed_from_epoch"] is None and (second["resumed_from_epoch"] or 0) >= 2, \
            (second, rescuer.log()[-3000:])
        epochs = [event["epoch"] for event in client.events_of(job.job_id, "epoch")]
        resumed = second["resumed_from_epoch"]
        assert epochs[epochs.index(resumed + 1):] == list(range(resumed + 1, 41)), epochs  # not from epoch 1
        assert (JobRecords(tmp_path).record(job.job_id) or {})["worker"] != record.get("worker")
    finally:
        assert rescuer.terminate() == 0


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat", encoding="ascii") as stat:  # a zombie counts as gone
        return stat.read().split()[2] != "Z"


def test_sigterm_puts_the_running_job_back_for_another_worker(
        amqp_url: str, prefix: str, tmp_path: Path, broker_cleanup: Any, client: RecordingClient,
        unused_port: int) -> None:
    register_cleanup(broker_cleanup, prefix)
    port = unused_port
    stopping = _start_job_worker(amqp_url, prefix, tmp_path, f"metrics.port={port}", "metrics.host=127.0.0.1",
                                 "jobs.kinds=[train]")
    job = new_job("moved", "train", LONG_TRAINING)
    try:
        client.watch(job.job_id)
        client.submit(job)
        client.wait_event(job.job_id, "epoch")
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=10) as health:
            assert health.status == 200
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as metrics:
            text = metrics.read().decode()
        assert "maze_jobs_running 1.0" in text and "maze_jobs_epochs_total" in text
    finally:
        assert stopping.terminate() == 0, "a clean stop, the job put back"
    assert not client.events_of(job.job_id, "failed") and job.job_id not in client.results
    with job_worker(job_settings(amqp_url, prefix, tmp_path), broker_cleanup):
        wait_until(lambda: len(client.events_of(job.job_id, "started")) == 2, "the job did not start again")
        assert [e["attempt"] for e in client.events_of(job.job_id, "started")] == [1, 1], \
            "a stop for a shutdown is not a failed attempt"
        client.cancel(job.job_id)
        assert client.result(job.job_id, timeout=60).status is JobStatus.CANCELLED


def test_a_job_survives_its_worker_losing_the_broker_connection(
        amqp_url: str, prefix: str, tmp_path: Path, broker_cleanup: Any, client: RecordingClient) -> None:
    with job_worker(job_settings(amqp_url, prefix, tmp_path, lease_ttl_s=20.0), broker_cleanup) as worker:
        job = new_job("reconnected", "train", [*LONG_TRAINING[:-8], "algorithm.n_epochs=5",
                                               *LONG_TRAINING[-7:]])
        client.watch(job.job_id)
        client.submit(job)
        client.wait_event(job.job_id, "epoch")
        assert close_connections(worker.service.worker_id) == 1
        result = client.result(job.job_id, timeout=180)
        assert result.status is JobStatus.FINISHED and result.attempts == 1, result
        assert [e["epoch"] for e in client.events_of(job.job_id, "epoch")] == [1, 2, 3, 4, 5]
        client.pump(2.0)
        assert len(client.events_of(job.job_id, "started")) == 1, "the job ran once"
        method = client.channel.queue_declare(worker.service.lease_queue, passive=True).method
        assert method.message_count == 0, "the lease is released"


def test_a_job_that_keeps_crashing_is_dead_lettered_after_the_delivery_limit(
        amqp_url: str, prefix: str, tmp_path: Path, broker_cleanup: Any, client: RecordingClient,
        monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in crashing_env().items():
        monkeypatch.setenv(key, value)
    # The policy lives in a test module: an operator allows such a package with jobs.allowed_targets.
    settings = job_settings(amqp_url, prefix, tmp_path, delivery_limit=2,
                            allowed_targets=("maze_engine.", "worker.", "job_harness."))
    with job_worker(settings, broker_cleanup):
        job = new_job("poison", "rollout", [*TINY_ROLLOUT, "policy._target_=job_harness.SelfKillingPolicy"])
        client.watch(job.job_id)
        client.submit(job)
        result = client.result(job.job_id)
    assert result.status is JobStatus.FAILED and result.error is not None
    assert (result.error.code, result.attempts) == ("crashed", 2)
    assert "SIGKILL" in result.error.message and "2 attempts" in result.error.message
    assert len(client.events_of(job.job_id, "started")) == 2
    letters = dead_letters(client)
    assert len(letters) == 1
    properties, body = letters[0]
    assert properties.headers[topology.DEAD_REASON_HEADER] == "job_failed"
    assert "SIGKILL" in properties.headers[topology.DEAD_DETAIL_HEADER]
    assert msgpack.unpackb(body)["job_id"] == "poison"


def _cli(*args: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "worker.cli", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout, env={**os.environ})


def test_the_cli_submits_waits_reports_status_and_role_all_serves_both(
        amqp_url: str, prefix: str, tmp_path: Path, broker_cleanup: Any) -> None:
    register_cleanup(broker_cleanup, prefix)
    both = start_subprocess_worker(amqp_url, prefix, "role=all", f"artifact_root={tmp_path}",
                                   "jobs.poll_interval_s=0.2")
    try:
        done = _cli("submit", "rollout", *TINY_ROLLOUT, "runner.n_episodes=3", "--job-id", "from-cli",
                    "--wait", "--chunks", "1", "--url", amqp_url, "--prefix", prefix)
        assert done.returncode == 0, done.stderr
        result = json.loads(done.stdout)
        assert result["status"] == "finished"
        assert result["summary"]["statistics"]["episode_length"]["count"] == 3
        status = _cli("jobs", "status", "from-cli", "--artifact-root", str(tmp_path))
        assert status.returncode == 0 and json.loads(status.stdout)["status"] == "finished"
        producer = Producer(amqp_url, prefix)  # the agent side of role=all answers states meanwhile
        try:
            reply = producer.call("ep-1", 0, state(0.5))
            assert reply["error"] is None and reply["action"] is not None
        finally:
            producer.close()
    finally:
        assert both.terminate() == 0
    unknown = _cli("jobs", "status", "never-submitted", "--artifact-root", str(tmp_path))
    assert unknown.returncode == 1 and json.loads(unknown.stdout)["status"] == "unknown"
    usage = _cli("submit", "train", "--job-id", "has space")
    assert usage.returncode == 2 and "job_id" in usage.stderr
    assert "--publish-policy" in _cli("submit", "--help").stdout
