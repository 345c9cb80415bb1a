"""The publishing gate: a training job's policy is published only when its best evaluation return is not worse
than the one recorded for the current version, unless forced; the job result says which happened."""

import json
import logging
import sys
from pathlib import Path
from typing import Any

import msgpack
import pytest

from maze_engine.core.errors import ConfigError
from worker.jobs.codec import JobDecodeError, decode_job, encode_job, new_job
from worker.jobs.publishing import publish_trained_policy
from worker.jobs.records import JobRecords
from worker.jobs.schema import JobResult, JobStatus
from worker.policy_store.gate import PolicyKept, publish_if_not_worse, verdict
from worker.policy_store.store import (
    MANIFEST_FILE,
    PublishedPolicy,
    get_policy,
    load_published_policy,
    publish_policy,
    published_names,
    published_versions,
)
from worker.policy_store.versioned import published_source
from worker.serving.factory import build_factory

sys.path.insert(0, str(Path(__file__).parent))
from policy_harness import NAME, policy_config, save_run  # noqa: E402
from worker_harness import CARTPOLE  # noqa: E402


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_run(tmp_path_factory.mktemp("run"), seed=1)


def version(recorded: float | None, number: int = 2) -> PublishedPolicy:
    return PublishedPolicy(NAME, number, Path("/nowhere"), best_eval_return=recorded)


@pytest.mark.parametrize(("current", "run_return", "force", "kept"), [
    (None, 20.0, False, False),                 # the first version
    (version(None), 20.0, False, False),        # nothing recorded to compare
    (version(300.0), 300.0, False, False),      # equal is not worse
    (version(300.0), 480.0, False, False),
    (version(300.0), 120.0, False, True),
    (version(300.0), None, False, True),        # a run without a return does not replace one with
    (version(300.0), 120.0, True, False),       # forced
])
def test_verdict(current: PublishedPolicy | None, run_return: float | None, force: bool, kept: bool) -> None:
    assert (verdict(current, run_return, force) is not None) is kept


def test_a_kept_version_is_named_with_both_returns() -> None:
    assert verdict(version(480.0), 350.0) == ("kept version 2: its recorded return 480.0 beats this run's "
                                              "350.0 (force_publish publishes anyway)")


def test_the_manifest_records_the_best_evaluation_return(tmp_path: Path, run_dir: Path) -> None:
    published = publish_policy(tmp_path, NAME, run_dir, best_eval_return=187.5)
    manifest = json.loads((published.path / MANIFEST_FILE).read_text())
    assert manifest["best_eval_return"] == 187.5
    assert get_policy(tmp_path, NAME, 1).best_eval_return == 187.5
    assert publish_policy(tmp_path, NAME, run_dir, best_eval_return=float("nan")).best_eval_return is None
    assert get_policy(tmp_path, NAME, 2).best_eval_return is None


def test_worse_runs_are_kept_better_and_forced_ones_published(tmp_path: Path, run_dir: Path) -> None:
    first = publish_if_not_worse(tmp_path, NAME, run_dir, 200.0)
    assert first.published and first.policy.version == 1
    assert first.message == "published version 1: the first version"
    worse = publish_if_not_worse(tmp_path, NAME, run_dir, 150.0)
    assert not worse.published and worse.policy.version == 1
    assert worse.message.startswith("kept version 1: its recorded return 200.0 beats this run's 150.0")
    assert published_versions(tmp_path, NAME) == [1]
    assert [entry.name for entry in (tmp_path / "policies" / NAME).iterdir()] == ["1"]  # no staging left
    better = publish_if_not_worse(tmp_path, NAME, run_dir, 200.0)
    assert better.published and better.policy.version == 2
    assert "200.0 is not worse than version 1's 200.0" in better.message
    forced = publish_if_not_worse(tmp_path, NAME, run_dir, 10.0, force=True)
    assert forced.published and forced.policy.version == 3 and "forced" in forced.message
    assert forced.to_plain() == {"name": NAME, "version": 3, "published": True, "best_eval_return": 10.0,
                                 "message": forced.message}


def test_a_publisher_that_loses_the_race_compares_with_the_winner(tmp_path: Path, run_dir: Path) -> None:
    """Another job publishes a better version between this one's check and its claim of the number: the check
    runs again against the winner, and this run is kept."""
    publish_policy(tmp_path, NAME, run_dir, best_eval_return=100.0)
    seen: list[int | None] = []

    def check(current: PublishedPolicy | None) -> None:
        seen.append(None if current is None else current.version)
        if len(seen) == 1:
            publish_policy(tmp_path, NAME, run_dir, best_eval_return=450.0)  # the other job, just in time
        reason = verdict(current, 300.0)
        if reason is not None:
            assert current is not None
            raise PolicyKept(current, reason)

    with pytest.raises(PolicyKept, match="kept version 2: its recorded return 450.0"):
        publish_policy(tmp_path, NAME, run_dir, best_eval_return=300.0, check_predecessor=check)
    assert seen == [1, 2] and published_versions(tmp_path, NAME) == [1, 2]


class RecordingTransport:
    def __init__(self) -> None:
        self.published: list[tuple[str, str, bytes]] = []

    def publish(self, exchange: str, routing_key: str, body: bytes, *args: Any, **kwargs: Any) -> None:
        self.published.append((exchange, routing_key, body))


def finished(job_id: str, run_dir: Path, best: float | None) -> JobResult:
    return JobResult(job_id, "train", JobStatus.FINISHED, str(run_dir), summary={"best_eval_return": best})


def test_the_job_result_says_whether_it_published_and_only_new_versions_are_announced(
        tmp_path: Path, run_dir: Path, caplog: pytest.LogCaptureFixture) -> None:
    records, transport = JobRecords(tmp_path), RecordingTransport()
    caplog.set_level(logging.INFO, logger="worker.jobs.publishing")

    def publish(job_id: str, best: float | None, force: bool = False) -> dict[str, Any]:
        job = new_job(job_id, "train", publish_policy=NAME, force_publish=force)
        result = publish_trained_policy(job, finished(job_id, run_dir, best), records, transport,  # type: ignore[arg-type]
                                        "prefix")
        assert result.status is JobStatus.FINISHED and result.policy is not None
        return dict(result.policy)

    assert publish("first", 300.0) == {"name": NAME, "version": 1, "published": True,
                                       "best_eval_return": 300.0,
                                       "message": "published version 1: the first version"}
    kept = publish("worse", 250.0)
    assert kept["published"] is False and kept["version"] == 1 and kept["best_eval_return"] == 300.0
    assert "kept version 1: its recorded return 300.0 beats this run's 250.0" in kept["message"]
    assert "kept version 1" in caplog.text
    assert publish("forced", 250.0, force=True)["version"] == 2
    assert [exchange for exchange, _, _ in transport.published] == ["prefix.policies", "prefix.policies"]


def test_force_publish_is_a_checked_field_of_the_job_message() -> None:
    job = new_job("forced", "train", publish_policy=NAME, force_publish=True)
    assert decode_job(encode_job(job)).force_publish is True
    assert new_job("plain", "train", publish_policy=NAME).force_publish is False
    with pytest.raises(JobDecodeError, match="^force_publish: expected only with publish_policy") as caught:
        new_job("no-name", "train", force_publish=True)
    assert caught.value.field == "force_publish"
    body = msgpack.packb({"v": 1, "job_id": "j", "kind": "train", "publish_policy": NAME,
                          "force_publish": "yes"})
    with pytest.raises(JobDecodeError, match=r"^force_publish: expected nil or a boolean, got str 'yes'"):
        decode_job(body)


def test_policy_name_errors_list_the_published_names(tmp_path: Path, run_dir: Path) -> None:
    with pytest.raises(ConfigError, match=r"\(nothing is published there yet\)"):
        load_published_policy("cartpole", tmp_path)
    publish_policy(tmp_path, "cartpole", run_dir)
    publish_policy(tmp_path, "lander", run_dir)
    assert published_names(tmp_path) == ["cartpole", "lander"]
    with pytest.raises(ConfigError, match=r"'pole' is published .*\(published there: cartpole, lander\)"):
        published_source(policy_config(tmp_path, "pole"), CARTPOLE, None, build_factory)
    with pytest.raises(ConfigError, match=r"^policy.name: expected .* got str ''.*there: cartpole, lander"):
        published_source(policy_config(tmp_path, ""), CARTPOLE, None, build_factory)


def test_the_served_version_is_logged_at_start(tmp_path: Path, run_dir: Path,
                                               caplog: pytest.LogCaptureFixture) -> None:
    publish_policy(tmp_path, NAME, run_dir, best_eval_return=321.0)
    caplog.set_level(logging.INFO, logger="worker.policy_store.versioned")
    published_source(policy_config(tmp_path), CARTPOLE, None, build_factory)
    assert f"serving policy '{NAME}' version 1 (published " in caplog.text
    assert "best evaluation return 321.0" in caplog.text


@pytest.mark.integration
def test_a_training_job_keeps_a_better_published_version_unless_forced(
        amqp_url: str, prefix: str, tmp_path: Path, broker_cleanup: Any) -> None:
    from job_harness import TINY_TRAINING, RecordingClient, job_settings, job_worker

    client = RecordingClient(amqp_url, prefix)

    def train(job_id: str, force: bool = False) -> dict[str, Any]:
        client.submit(new_job(job_id, "train", TINY_TRAINING, publish_policy=NAME, force_publish=force))
        result = client.result(job_id, timeout=300)
        assert result.status is JobStatus.FINISHED and result.policy is not None, result
        return dict(result.policy)

    try:
        with job_worker(job_settings(amqp_url, prefix, tmp_path), broker_cleanup):
            first = train("gate-first")
            assert first["published"] is True and first["version"] == 1
            assert first["best_eval_return"] == get_policy(tmp_path, NAME, 1).best_eval_return is not None
            manifest_path = tmp_path / "policies" / NAME / "1" / MANIFEST_FILE
            manifest = json.loads(manifest_path.read_text())
            manifest["best_eval_return"] = 1e6  # a version no tiny training can beat
            manifest_path.write_text(json.dumps(manifest))
            kept = train("gate-kept")
            assert kept["published"] is False and kept["version"] == 1
            assert kept["message"].startswith("kept version 1: its recorded return 1000000.0 beats this")
            assert published_versions(tmp_path, NAME) == [1]
            forced = train("gate-forced", force=True)
            assert forced["published"] is True and forced["version"] == 2 and "forced" in forced["message"]
    finally:
        client.close()
