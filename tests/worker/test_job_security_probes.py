"""Hostile job messages against the real broker and a job worker: every probe is answered ``bad_job`` naming
the override or field, never starts a process, creates no file outside the artifact root, and leaks no
environment value into results, events or dead letters; a valid job runs afterwards."""

from __future__ import annotations

import sys
import uuid
from pathlib import Path
from typing import Any

import msgpack
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from job_harness import (  # noqa: E402
    TINY_ROLLOUT,
    TINY_TRAINING,
    RecordingClient,
    dead_letters,
    job_settings,
    job_worker,
    nested_list,
    publish_raw,
    raw_map,
)

from worker.jobs.codec import new_job  # noqa: E402
from worker.jobs.schema import JobStatus  # noqa: E402
from worker.wire import topology  # noqa: E402

pytestmark = pytest.mark.integration

PROBE_ENV = "MAZE_PROBE_VALUE"
"""Not named like a secret, so only the override grammar, not the redaction of error texts, keeps it out."""


@pytest.fixture
def client(amqp_url: str, prefix: str) -> Any:
    client = RecordingClient(amqp_url, prefix)
    yield client
    client.close()


def _files(folder: Path) -> set[str]:
    return {str(path.relative_to(folder)) for path in folder.rglob("*")}


def test_hostile_jobs_are_refused_naming_the_override_and_leak_nothing(
        amqp_url: str, prefix: str, tmp_path: Path, broker_cleanup: Any, client: RecordingClient,
        monkeypatch: pytest.MonkeyPatch) -> None:
    secret = f"probe-{uuid.uuid4().hex}"
    monkeypatch.setenv(PROBE_ENV, secret)
    root, outside = tmp_path / "root", tmp_path / "outside"
    outside.mkdir()
    (outside / "sentinel.txt").write_text("untouched")
    before = _files(outside)
    env = f"${{oc.env:{PROBE_ENV}}}"
    probes: dict[str, tuple[str, list[str], dict[str, Any], str, str]] = {
        # job id: (kind, overrides, other fields, field named, fragment of the message)
        "makedirs": ("rollout", ["env._target_=os.makedirs", f"env.name={outside}/made"], {},
                     "overrides[0]", "env._target_"),
        "reexport": ("rollout", ["env._target_=maze_engine.rollout.launch.Path"], {}, "overrides[0]",
                     "env._target_"),
        "secret": ("rollout", [*TINY_ROLLOUT, f"runner.n_episodes={env}"], {}, "overrides[2]",
                   "runner.n_episodes"),
        "secret-quoted": ("rollout", [f"env.name='{env}'"], {}, "overrides[0]", "interpolations"),
        "climb": ("rollout", ["policy=torch_policy", "input_dir=../../.."], {}, "overrides[1]", "input_dir"),
        "absolute": ("rollout", ["policy=torch_policy", f"input_dir={outside}"], {}, "overrides[1]",
                     "input_dir"),
        "store-root": ("rollout", ["policy=published_policy", "policy.name=x",
                                   f"policy.artifact_root={outside}"], {}, "overrides[2]", "artifact_root"),
        "hydra-dir": ("rollout", [f"hydra.run.dir={outside}/hydra"], {}, "overrides[0]", "hydra"),
        "add-key": ("rollout", ["+env.kwargs=1"], {}, "overrides[0]", "'+'"),
        "delete-key": ("rollout", ["~env.name"], {}, "overrides[0]", "'~'"),
        "gym-module": ("rollout", ["env.name=antigravity:Fly-v0"], {}, "overrides[0]", "env.name"),
        "activation": ("train", ["model.policy.networks.0.non_lin=os.system"], {}, "overrides[0]", "non_lin"),
        "worker-config": ("rollout", [], {"config": "conf_worker"}, "config", "conf_rollout"),
        "publish-dots": ("train", [], {"publish_policy": ".."}, "publish_policy", "publish_policy"),
        "publish-slash": ("train", [], {"publish_policy": "a/b"}, "publish_policy", "publish_policy"),
    }
    with job_worker(job_settings(amqp_url, prefix, root), broker_cleanup):
        client.watch("*")  # every job's events (job ids hold no dots)
        for job_id, (kind, overrides, fields, _field, _fragment) in probes.items():
            publish_raw(client, kind, msgpack.packb({"v": 1, "job_id": job_id, "kind": kind,
                                                     "overrides": overrides, **fields}))
        publish_raw(client, "rollout", msgpack.packb({"v": 1, "job_id": "..", "kind": "rollout"}))
        deep = nested_list(1000)  # repr() of this list raises RecursionError
        publish_raw(client, "rollout", raw_map(v=msgpack.packb(1), job_id=msgpack.packb("deep"), kind=deep))
        client.channel.basic_publish(topology.control_exchange(prefix), "", raw_map(
            v=msgpack.packb(1), command=msgpack.packb("cancel"), job_id=msgpack.packb("x"), reason=deep))

        results = {job_id: client.result(job_id, timeout=60) for job_id in [*probes, "deep"]}
        good = new_job("valid-after-hostile", "rollout", [*TINY_ROLLOUT, "runner.n_episodes=2"])
        client.submit(good)
        assert client.result(good.job_id).status is JobStatus.FINISHED, "the worker keeps going"
        client.pump(0.5)
    for job_id, (_kind, _overrides, _fields, field, fragment) in probes.items():
        result = results[job_id]
        assert result.status is JobStatus.FAILED and result.error is not None, (job_id, result)
        assert result.error.code == "bad_job", (job_id, result.error)
        assert result.error.message.startswith(f"{field}: "), (job_id, result.error.message)
        assert fragment in result.error.message, (job_id, result.error.message)
        assert [event["event"] for event in client.events_of(job_id)] == ["failed"], "it never started"
        assert not (root / "jobs" / job_id / "spec.json").exists(), "no child process was started"
    assert results["deep"].error is not None and results["deep"].error.message.startswith("kind: ")
    assert _files(outside) == before, "nothing was created outside the artifact root"
    assert {path for path in _files(tmp_path) if not path.startswith("root")} == \
        {"outside", "outside/sentinel.txt"}
    assert not (root.parent / "made").exists() and not Path("made").exists()

    letters = dead_letters(client)
    headers = [properties.headers for properties, _body in letters]
    fields = sorted(header[topology.DEAD_FIELD_HEADER] for header in headers)
    assert fields == sorted([field for *_rest, field, _fragment in probes.values()] + ["job_id", "kind"])
    assert {header[topology.DEAD_REASON_HEADER] for header in headers} == {"bad_job"}
    seen = repr([result.to_plain() for result in results.values()]) + repr(client.seen) + repr(headers)
    assert secret not in seen, "an environment value leaked"


def test_a_rollout_reads_a_trained_policy_by_a_path_relative_to_the_artifact_root(
        amqp_url: str, prefix: str, tmp_path: Path, broker_cleanup: Any, client: RecordingClient) -> None:
    with job_worker(job_settings(amqp_url, prefix, tmp_path), broker_cleanup):
        train = new_job("trained", "train", TINY_TRAINING)
        client.submit(train)
        assert client.result(train.job_id).status is JobStatus.FINISHED
        rollout = new_job("replay", "rollout", [*TINY_ROLLOUT, "runner.n_episodes=2", "policy=torch_policy",
                                                "model=vector_obs", "input_dir=jobs/trained/output"])
        client.submit(rollout)
        result = client.result(rollout.job_id)
    assert result.status is JobStatus.FINISHED, result
    assert result.summary["statistics"]["episode_return"]["count"] == 2
    spec = (tmp_path / "jobs" / "replay" / "spec.json").read_text()
    assert f"input_dir={tmp_path.resolve()}/jobs/trained/output" in spec, "passed on as an absolute path"
