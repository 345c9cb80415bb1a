"""Evaluate jobs against the real broker: a published policy estimated on a logged Minari dataset (submitted
with the CLI, its result shown by ``jobs status``) and on the experience stream; data without propensities
fails the job with one line and the worker goes on; messages that ask for a run directory, a path out of the
artifact root or numbers out of range are refused naming the field, and no process starts."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import msgpack
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from evaluation_harness import publish_episodes, save_run, write_dataset  # noqa: E402
from job_harness import RecordingClient, dead_letters, job_settings, job_worker, publish_raw  # noqa: E402

from worker.jobs.child import BROKER_ENV, EVALUATION_FILE  # noqa: E402
from worker.jobs.codec import new_job  # noqa: E402
from worker.jobs.records import SPEC_FILE, JobRecords  # noqa: E402
from worker.jobs.schema import JobStatus  # noqa: E402
from worker.policy_store.store import publish_policy  # noqa: E402
from worker.wire import topology  # noqa: E402

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
FAST = {"bootstrap": 20, "fqe_steps": 100}
"""Few resamples and a short Q-function fit: estimates of a few seconds."""


@pytest.fixture
def client(amqp_url: str, prefix: str) -> Any:
    client = RecordingClient(amqp_url, prefix)
    yield client
    client.close()


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """An artifact root with ``cartpole`` version 1 and the datasets cartpole/logged-v0 (20 episodes with
    propensities) and cartpole/unlogged-v0 (without)."""
    root = tmp_path / "root"
    publish_policy(root, "cartpole", save_run(tmp_path / "run", seed=1))
    write_dataset(root / "datasets" / "cartpole" / "logged-v0", episodes=20)
    write_dataset(root / "datasets" / "cartpole" / "unlogged-v0", episodes=5, infos=False,
                  dataset_id="cartpole/unlogged-v0")
    return root


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "worker.cli", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=240, env={**os.environ})


def _assert_estimates(summary: dict[str, Any], episodes: int,
                      methods: tuple[str, ...] = ("wis", "dr")) -> None:
    assert summary["episodes"] == episodes and summary["steps"] > episodes
    assert set(summary["estimates"]) == set(methods)
    for name, estimate in summary["estimates"].items():
        assert estimate["method"] == name
        assert estimate["low"] <= estimate["value"] <= estimate["high"], estimate
        assert 1.0 <= estimate["ess"] <= episodes


def test_an_evaluate_job_estimates_a_published_policy_and_data_without_propensities_fails_it(
        amqp_url: str, prefix: str, root: Path, broker_cleanup: Any, client: RecordingClient) -> None:
    with job_worker(job_settings(amqp_url, prefix, root), broker_cleanup):
        unlogged = new_job("eval-unlogged", "evaluate", evaluation={
            "policy": "published:cartpole@1", "dataset": "cartpole/unlogged-v0", **FAST})
        client.submit(unlogged)
        failed = client.result(unlogged.job_id)
        assert failed.status is JobStatus.FAILED and failed.error is not None
        assert (failed.error.code, failed.attempts) == ("data", 1), "bad data is never retried"
        assert "behaviour log-probabilities: Minari dataset cartpole/unlogged-v0 carries none" in \
            failed.error.message and "\n" not in failed.error.message, failed.error.message

        done = _cli("submit", "evaluate", "--policy", "published:cartpole@1",
                    "--dataset", "cartpole/logged-v0", "--gamma", "0.99", "--bootstrap", "20",
                    "--fqe-steps", "100", "--seed", "3",
                    "--job-id", "eval-logged", "--wait", "--url", amqp_url, "--prefix", prefix)
        assert done.returncode == 0, done.stderr
        result = json.loads(done.stdout)
        assert (result["status"], result["kind"], result["error"]) == ("finished", "evaluate", None)
        summary = result["summary"]
        assert (summary["policy"], summary["gamma"], summary["bootstrap"], summary["level"]) == \
            ("published:cartpole@1", 0.99, 20, 0.95)
        assert summary["dataset"] == str(root.resolve() / "datasets" / "cartpole" / "logged-v0")
        _assert_estimates(summary, episodes=20)
        written = json.loads((Path(result["output_dir"]) / EVALUATION_FILE).read_text())
        assert written == summary
    status = _cli("jobs", "status", "eval-logged", "--artifact-root", str(root))
    assert status.returncode == 0, status.stderr
    assert json.loads(status.stdout)["result"]["summary"] == summary
    reasons = [(props.headers[topology.DEAD_REASON_HEADER], props.headers[topology.DEAD_FIELD_HEADER])
               for props, _body in dead_letters(client)]
    assert reasons == [("bad_job", "evaluation")]


def test_an_evaluate_job_reads_the_experience_stream_with_the_workers_broker_settings(
        amqp_url: str, prefix: str, root: Path, broker_cleanup: Any, client: RecordingClient) -> None:
    publish_episodes(amqp_url, prefix, [5, 9, 12, 7])
    with job_worker(job_settings(amqp_url, prefix, root), broker_cleanup):
        job = new_job("eval-stream", "evaluate", evaluation={
            "policy": "published:cartpole", "dataset": f"stream:{prefix}", "methods": ["wis"], **FAST})
        client.submit(job)
        result = client.result(job.job_id)
        assert result.status is JobStatus.FINISHED, result
        _assert_estimates(dict(result.summary), episodes=4, methods=("wis",))
        assert (result.summary["steps"], result.summary["dataset"]) == (33, f"stream:{prefix}")
        missing = new_job("eval-no-stream", "evaluate", evaluation={
            "policy": "published:cartpole", "dataset": f"stream:{prefix}-none", **FAST})
        client.submit(missing)
        failed = client.result(missing.job_id)
        assert failed.status is JobStatus.FAILED and failed.error is not None
        assert failed.error.code == "data" and f"{prefix}-none.experience" in failed.error.message
    spec = (JobRecords(root).job_dir(job.job_id) / SPEC_FILE).read_text()
    assert amqp_url not in spec and BROKER_ENV not in spec, "the broker URL stays out of the job directory"


def test_evaluate_jobs_asking_for_what_they_may_not_are_refused_naming_the_field(
        amqp_url: str, prefix: str, root: Path, tmp_path: Path, broker_cleanup: Any,
        client: RecordingClient) -> None:
    outside = write_dataset(tmp_path / "outside", episodes=2)
    good = {"policy": "published:cartpole@1", "dataset": "cartpole/logged-v0"}
    probes: dict[str, tuple[dict[str, Any], str, str]] = {
        # job id: (changes to the evaluation map, field named, fragment of the message)
        "run-dir": ({"policy": str(tmp_path / "run")}, "evaluation.policy", "never a run directory"),
        "policy-escape": ({"policy": "published:../run"}, "evaluation.policy", "published:NAME@VERSION"),
        "not-published": ({"policy": "published:cartpole@7"}, "evaluation.policy", "version 7"),
        "dataset-escape": ({"dataset": "../outside"}, "evaluation.dataset", "'..' and '~' are refused"),
        "dataset-outside": ({"dataset": str(outside)}, "evaluation.dataset", "inside the artifact root"),
        "gamma": ({"gamma": 1.5}, "evaluation.gamma", "a discount in (0, 1]"),
        "bootstrap": ({"bootstrap": 0}, "evaluation.bootstrap", "in [2, 10000]"),
        "level": ({"level": 1.0}, "evaluation.level", "in (0, 1)"),
        "methods": ({"methods": ["wis", "is"]}, "evaluation.methods", "['wis', 'dr']"),
        "epsilon": ({"epsilon": 2}, "evaluation.epsilon", "in (0, 1)"),
        "target": ({"_target_": "os.system"}, "evaluation", "expected only the keys"),
    }
    before = {str(path) for path in tmp_path.rglob("*") if not path.is_relative_to(root)}
    with job_worker(job_settings(amqp_url, prefix, root), broker_cleanup):
        for job_id, (changes, _field, _fragment) in probes.items():
            publish_raw(client, "evaluate", msgpack.packb({"v": 1, "job_id": job_id, "kind": "evaluate",
                                                           "evaluation": {**good, **changes}}))
        publish_raw(client, "evaluate", msgpack.packb({"v": 1, "job_id": "overrides", "kind": "evaluate",
                                                       "evaluation": good,
                                                       "overrides": ["env._target_=os.system"]}))
        for job_id, (_changes, field, fragment) in [*probes.items(), ("overrides", ({}, "overrides", "no"))]:
            result = client.result(job_id, timeout=60)
            assert result.status is JobStatus.FAILED and result.error is not None, job_id
            assert result.error.code == "bad_job", (job_id, result.error)
            assert result.error.message.startswith(f"{field}: ") and fragment in result.error.message, \
                (job_id, result.error.message)
            assert not JobRecords(root).output_dir(job_id).exists(), f"{job_id}: no process ran"
    fields = sorted(props.headers[topology.DEAD_FIELD_HEADER] for props, _body in dead_letters(client))
    assert fields == sorted([field for _changes, field, _fragment in probes.values()] + ["overrides"])
    assert {str(path) for path in tmp_path.rglob("*") if not path.is_relative_to(root)} == before
