"""Job worker settings (errors name the key), the job topology as pure functions, and the intake's checks
that need no broker."""

from pathlib import Path
from typing import Any

import msgpack
import pytest

from maze_engine.config import compose_config
from maze_engine.core.errors import ConfigError
from worker.broker.job_transport import JobDelivery
from worker.jobs.intake import Accepted, JobIntake, Rejected, attempts_of
from worker.jobs.records import JobRecords
from worker.jobs.schema import JobResult, JobStatus
from worker.settings import JobSettings, WorkerSettings
from worker.wire import declarations, topology


def test_the_shipped_config_has_the_job_keys_and_their_defaults() -> None:
    cfg = compose_config("conf_worker", ["role=jobs", "artifact_root=/shared"])
    settings = WorkerSettings.from_config(cfg)
    assert (settings.role, settings.artifact_root) == ("jobs", "/shared")
    assert settings.jobs == JobSettings()
    assert WorkerSettings.from_config(compose_config("conf_worker", [])).role == "agent"


@pytest.mark.parametrize(("config", "key"), [
    ({"role": "trainer"}, "role"),
    ({"artifact_root": ""}, "artifact_root"),
    ({"jobs": {"kinds": ["train", "explode"]}}, "jobs.kinds"),
    ({"jobs": {"kinds": []}}, "jobs.kinds"),
    ({"jobs": {"kinds": ["train", "train"]}}, "jobs.kinds"),
    ({"jobs": {"delivery_limit": 0}}, "jobs.delivery_limit"),
    ({"jobs": {"cancel_grace_s": 0}}, "jobs.cancel_grace_s"),
    ({"jobs": {"lease_ttl_s": 1}}, "jobs.lease_ttl_s"),
    ({"jobs": {"poll_interval_s": "fast"}}, "jobs.poll_interval_s"),
    ({"jobs": []}, "jobs"),
    ({"jobs": {"allowed_targets": []}}, "jobs.allowed_targets"),
    ({"jobs": {"allowed_targets": "maze_engine."}}, "jobs.allowed_targets"),
    ({"jobs": {"allowed_targets": ["maze_engine.", "os.path/"]}}, "jobs.allowed_targets"),
    ({"jobs": {"allowed_targets": [".x"]}}, "jobs.allowed_targets"),
])
def test_bad_job_settings_name_their_key(config: dict[str, Any], key: str) -> None:
    with pytest.raises(ConfigError) as info:
        WorkerSettings.from_config(config)
    assert str(info.value).startswith(f"{key}:")


def test_job_topology() -> None:
    spec = declarations.jobs_topology("maze", delivery_limit=5)
    queues = {queue.name: queue.arguments for queue in spec.queues}
    assert queues["maze.jobs.train"] == {"x-queue-type": "quorum", "x-delivery-limit": 5,
                                         "x-dead-letter-exchange": "maze.dead"}
    assert "maze.jobs.rollout" in queues and "maze.jobs.evaluate" in queues and "maze.dead" in queues
    exchanges = {exchange.name: exchange.type for exchange in spec.exchanges}
    assert exchanges == {"maze.dead": "fanout", "maze.jobs.return": "headers", "maze.events": "topic",
                         "maze.control": "fanout", "maze.policies": "fanout"}
    returns = {b.queue: b.arguments for b in spec.bindings if b.exchange == "maze.jobs.return"}
    assert returns["maze.jobs.train"] == {"x-match": "all", topology.JOB_KIND_HEADER: "train"}
    lease = topology.lease_queue_arguments("maze", 60)
    assert lease["x-message-ttl"] == 60_000 and lease["x-dead-letter-exchange"] == "maze.jobs.return"
    assert lease["x-expires"] > lease["x-message-ttl"], "the queue outlives its last copy"
    assert topology.lease_queue("maze", "host-1-abc") == "maze.jobs.lease.host-1-abc"
    assert topology.job_event_routing_key("j", "epoch") == "job.j.epoch"
    for bad in (lambda: topology.lease_queue("maze", "a.b"), lambda: topology.jobs_queue_arguments("maze", 0),
                lambda: topology.lease_queue_arguments("maze", 0)):
        with pytest.raises(ValueError):
            bad()


def _delivery(body: dict[str, Any], reply_to: str | None = "reply",
              attempts: int | None = None) -> JobDelivery:
    headers = {} if attempts is None else {topology.JOB_ATTEMPTS_HEADER: attempts}
    return JobDelivery(tag=1, body=msgpack.packb(body), queue="maze.jobs.rollout", reply_to=reply_to,
                       correlation_id="c", headers=headers, redelivered=False, properties=None)


ROLLOUT = {"v": 1, "job_id": "r", "kind": "rollout", "overrides": ["runner=sequential"]}


def test_intake_accepts_counts_attempts_and_plans_splits(tmp_path: Path) -> None:
    intake = JobIntake(JobRecords(tmp_path))
    decision = intake.check(_delivery(ROLLOUT), 3)
    assert isinstance(decision, Accepted) and decision.attempts == 1 and decision.split is None
    decision = intake.check(_delivery(ROLLOUT, attempts=2), 3)
    assert isinstance(decision, Accepted) and decision.attempts == 3
    split = intake.check(_delivery({**ROLLOUT, "overrides": ["runner.n_episodes=5"], "chunks": 2}), 3)
    assert isinstance(split, Accepted) and split.split is not None and len(split.split.jobs) == 2
    assert attempts_of({topology.JOB_ATTEMPTS_HEADER: "x"}) == 0


def test_intake_rejects_with_the_reason(tmp_path: Path) -> None:
    records = JobRecords(tmp_path)
    intake = JobIntake(records)
    exhausted = intake.check(_delivery(ROLLOUT, attempts=3), 3)
    assert isinstance(exhausted, Rejected) and exhausted.dead_reason == "job_failed" and exhausted.store
    no_reply = intake.check(_delivery(ROLLOUT, reply_to=None), 3)
    assert isinstance(no_reply, Rejected) and (no_reply.dead_reason, no_reply.field) == ("no_reply_to",
                                                                                        "reply_to")
    bad = intake.check(_delivery({**ROLLOUT, "overrides": ["runner=warp"]}), 3)
    assert isinstance(bad, Rejected) and bad.result is not None and bad.field == "overrides[0]"
    assert bad.result.error is not None and bad.result.error.code == "bad_job"
    assert not bad.store, "a job that never ran can be fixed and sent again under its id"
    records.mark_cancelled("r", "stop")
    cancelled = intake.check(_delivery(ROLLOUT), 3)
    assert isinstance(cancelled, Rejected) and cancelled.result is not None
    assert cancelled.result.status is JobStatus.CANCELLED and cancelled.dead_reason is None
    records.store_result(JobResult("r", "rollout", JobStatus.FINISHED, "out"))
    stored = intake.check(_delivery(ROLLOUT), 3)
    assert isinstance(stored, Rejected) and stored.result is not None
    assert stored.result.status is JobStatus.FINISHED, "a stored result wins over everything"
    unsent = intake.check(_delivery(ROLLOUT, attempts=1), 3)
    assert isinstance(unsent, Rejected) and unsent.result is not None, \
        "a leftover copy of a job whose answer may have been lost with a connection answers it"
    records.update_record("r", answered=True)
    copy = intake.check(_delivery(ROLLOUT, attempts=1), 3)
    assert isinstance(copy, Rejected) and copy.result is None and copy.dead_reason is None, \
        "a worker's leftover copy of a finished and answered job is dropped, not answered a second time"


def test_a_copy_of_a_job_leased_elsewhere_is_dropped_but_a_lapsed_lease_runs(tmp_path: Path) -> None:
    records = JobRecords(tmp_path)
    intake = JobIntake(records)
    records.update_record("r", status="running", worker="other", lease_renewed=1000.0)
    live = intake.check(_delivery(ROLLOUT), 3, lease_ttl_s=60, now=1010.0)
    assert isinstance(live, Rejected) and live.result is None and live.dead_reason is None
    lapsed = intake.check(_delivery(ROLLOUT), 3, lease_ttl_s=60, now=1059.0)
    assert isinstance(lapsed, Accepted)
