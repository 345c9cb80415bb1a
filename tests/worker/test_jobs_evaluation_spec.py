"""Evaluate jobs without a broker: the ``evaluation`` map decodes with the CLI's defaults and names the field
of every mistake; the guard admits only published policies and datasets inside the artifact root (resolved
there), and the intake accepts an evaluate job without composing a config."""

from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import Any

import msgpack
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from evaluation_harness import save_run, write_dataset  # noqa: E402

from worker.broker.job_transport import JobDelivery  # noqa: E402
from worker.experience.evaluate import estimation_options, evaluate_parser  # noqa: E402
from worker.jobs.codec import JobDecodeError, decode_job, encode_job, new_job  # noqa: E402
from worker.jobs.guard import JobGuard, JobRefused  # noqa: E402
from worker.jobs.intake import Accepted, JobIntake  # noqa: E402
from worker.jobs.records import JobRecords  # noqa: E402
from worker.jobs.schema import EvaluationSpec, JobKind  # noqa: E402
from worker.policy_store.store import publish_policy  # noqa: E402

EVALUATION = {"policy": "published:cartpole@1", "dataset": "cartpole/logged-v0"}


def body(evaluation: Any = EVALUATION, **changes: Any) -> bytes:
    """An evaluate job message; ``...`` leaves a key out."""
    obj = {"v": 1, "job_id": "eval-1", "kind": "evaluate", "evaluation": evaluation, **changes}
    return msgpack.packb({key: value for key, value in obj.items() if value is not ...})


def test_an_evaluate_job_decodes_with_the_defaults_of_the_cli_and_round_trips() -> None:
    job = decode_job(body())
    assert (job.kind, job.config, job.overrides) == (JobKind.EVALUATE, "", ())
    assert job.evaluation == EvaluationSpec("published:cartpole@1", "cartpole/logged-v0")
    cli = estimation_options(evaluate_parser().parse_args(["--policy", "p", "--dataset", "d"]))
    assert {**cli, "methods": tuple(cli["methods"])} == {
        name: getattr(job.evaluation, name) for name in cli}, "a job estimates as the CLI does by default"
    chosen = new_job("eval-2", "evaluate", evaluation={
        "policy": "published:cartpole", "dataset": "stream:maze", "gamma": 0.99, "bootstrap": 20, "seed": 7,
        "level": 0.9, "methods": ["dr"], "epsilon": 0.01, "fqe_steps": 100})
    assert chosen.evaluation == EvaluationSpec("published:cartpole", "stream:maze", 0.99, 20, 7, 0.9, ("dr",),
                                               0.01, 100)
    assert decode_job(encode_job(chosen)) == chosen


@pytest.mark.parametrize(("evaluation", "changes", "field", "fragment"), [
    ({**EVALUATION, "policy": "/data/runs/ppo"}, {}, "evaluation.policy", "never a run directory"),
    ({**EVALUATION, "policy": "runs/ppo"}, {}, "evaluation.policy", "published:NAME@VERSION"),
    ({**EVALUATION, "policy": "published:../../etc"}, {}, "evaluation.policy", "published:NAME"),
    ({**EVALUATION, "policy": "published:a/b@1"}, {}, "evaluation.policy", "published:NAME"),
    ({**EVALUATION, "policy": "published:..@1"}, {}, "evaluation.policy", "published:NAME"),
    ({**EVALUATION, "policy": "published:cartpole@0"}, {}, "evaluation.policy", "published:NAME"),
    ({**EVALUATION, "policy": "published:cartpole@one"}, {}, "evaluation.policy", "published:NAME"),
    ({"dataset": "d"}, {}, "evaluation.policy", "the key is missing"),
    ({"policy": "published:x"}, {}, "evaluation.dataset", "the key is missing"),
    ({**EVALUATION, "dataset": ""}, {}, "evaluation.dataset", "a Minari dataset"),
    ({**EVALUATION, "dataset": "a\x00b"}, {}, "evaluation.dataset", "a Minari dataset"),
    ({**EVALUATION, "dataset": ["x"]}, {}, "evaluation.dataset", "a Minari dataset"),
    ({**EVALUATION, "gamma": 0}, {}, "evaluation.gamma", "a discount in (0, 1], got int 0"),
    ({**EVALUATION, "gamma": 1.5}, {}, "evaluation.gamma", "a discount in (0, 1], got float 1.5"),
    ({**EVALUATION, "gamma": "0.9"}, {}, "evaluation.gamma", "a discount in (0, 1]"),
    ({**EVALUATION, "gamma": True}, {}, "evaluation.gamma", "a discount in (0, 1]"),
    ({**EVALUATION, "gamma": math.nan}, {}, "evaluation.gamma", "a discount in (0, 1]"),
    ({**EVALUATION, "bootstrap": 1}, {}, "evaluation.bootstrap", "in [2, 10000], got int 1"),
    ({**EVALUATION, "bootstrap": 10_001}, {}, "evaluation.bootstrap", "in [2, 10000]"),
    ({**EVALUATION, "bootstrap": 50.0}, {}, "evaluation.bootstrap", "an integer"),
    ({**EVALUATION, "seed": -1}, {}, "evaluation.seed", "an integer in [0, 4294967295]"),
    ({**EVALUATION, "seed": 2**32}, {}, "evaluation.seed", "an integer in [0, 4294967295]"),
    ({**EVALUATION, "level": 1}, {}, "evaluation.level", "an interval coverage in (0, 1), got int 1"),
    ({**EVALUATION, "level": 0}, {}, "evaluation.level", "an interval coverage in (0, 1)"),
    ({**EVALUATION, "methods": []}, {}, "evaluation.methods", "['wis', 'dr']"),
    ({**EVALUATION, "methods": ["wis", "wis"]}, {}, "evaluation.methods", "distinct"),
    ({**EVALUATION, "methods": ["is"]}, {}, "evaluation.methods", "from ['wis', 'dr']"),
    ({**EVALUATION, "methods": "wis,dr"}, {}, "evaluation.methods", "a non-empty list"),
    ({**EVALUATION, "epsilon": 0}, {}, "evaluation.epsilon", "a probability floor in (0, 1)"),
    ({**EVALUATION, "epsilon": 1.0}, {}, "evaluation.epsilon", "a probability floor in (0, 1)"),
    ({**EVALUATION, "fqe_steps": 0}, {}, "evaluation.fqe_steps", "in [1, 100000]"),
    ({**EVALUATION, "fqe_steps": 100_001}, {}, "evaluation.fqe_steps", "in [1, 100000]"),
    ({**EVALUATION, "_target_": "os.system"}, {}, "evaluation", "expected only the keys policy, dataset"),
    ({**EVALUATION, "overrides": ["seed=1"]}, {}, "evaluation", "expected only the keys"),
    (..., {}, "evaluation", "a map with policy and dataset"),
    ("published:x", {}, "evaluation", "a map with policy and dataset"),
    (EVALUATION, {"config": "conf_train"}, "config", "an evaluate job composes no config"),
    (EVALUATION, {"overrides": ["env._target_=os.system"]}, "overrides", "takes no overrides"),
    (EVALUATION, {"publish_policy": "cartpole"}, "publish_policy", "only a train job"),
    (EVALUATION, {"chunks": 2}, "chunks", "only a rollout job"),
    (EVALUATION, {"kind": "rollout"}, "evaluation", "only an evaluate job carries one"),
])
def test_each_mistake_names_its_field_and_what_was_expected(evaluation: Any, changes: dict[str, Any],
                                                            field: str, fragment: str) -> None:
    with pytest.raises(JobDecodeError) as info:
        decode_job(body(evaluation, **changes))
    assert info.value.field == field
    assert info.value.message.startswith(f"{field}: expected") or info.value.message.startswith(
        f"{field}: only"), info.value.message
    assert fragment in info.value.message, info.value.message
    assert info.value.job_id == "eval-1"


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An artifact root with two published versions of ``cartpole`` and the dataset cartpole/logged-v0."""
    base = tmp_path_factory.mktemp("evaluate-guard")
    root = base / "root"
    for seed in (1, 2):
        publish_policy(root, "cartpole", save_run(base / f"run-{seed}", seed))
    write_dataset(root / "datasets" / "cartpole" / "logged-v0", episodes=2)
    write_dataset(base / "outside", episodes=2)
    (root / "linked").symlink_to(base / "outside")
    return root


def vet(root: Path, **evaluation: Any) -> EvaluationSpec:
    job = new_job("eval-1", "evaluate", evaluation={**EVALUATION, **evaluation})
    vetted = JobGuard(root).vet(job).evaluation
    assert vetted is not None
    return vetted


@pytest.mark.parametrize(("policy", "dataset", "resolved"), [
    ("published:cartpole@1", "cartpole/logged-v0", "datasets/cartpole/logged-v0"),
    ("published:cartpole", "datasets/cartpole/logged-v0", "datasets/cartpole/logged-v0"),
    ("published:cartpole@2", "{root}/datasets/cartpole/logged-v0/data", "datasets/cartpole/logged-v0/data"),
])
def test_the_guard_admits_published_policies_and_datasets_in_the_root(root: Path, policy: str, dataset: str,
                                                                      resolved: str) -> None:
    vetted = vet(root, policy=policy, dataset=dataset.format(root=root))
    assert (vetted.policy, vetted.dataset) == (policy, str(root.resolve() / resolved))
    assert vet(root, dataset="stream:maze").dataset == "stream:maze", "read from the stream by the job"


@pytest.mark.parametrize(("evaluation", "field", "fragment"), [
    ({"policy": "published:nothing@1"}, "evaluation.policy", "no version of 'nothing' is published"),
    ({"policy": "published:cartpole@3"}, "evaluation.policy", "version 3 of 'cartpole' is not published"),
    ({"policy": "published:nothing"}, "evaluation.policy", "published there: cartpole"),
    ({"dataset": "../outside"}, "evaluation.dataset", "'..' and '~' are refused"),
    ({"dataset": "/etc"}, "evaluation.dataset", "expected a path inside the artifact root"),
    ({"dataset": "linked"}, "evaluation.dataset", "expected a path inside the artifact root"),
    ({"dataset": "~/.minari/datasets/x-v0"}, "evaluation.dataset", "'..' and '~' are refused"),
    ({"dataset": "cartpole/other-v0"}, "evaluation.dataset", "no Minari dataset at"),
    ({"dataset": "stream:amq.x"}, "evaluation.dataset", "expected stream:<prefix> with a broker prefix"),
])
def test_the_guard_refuses_what_is_not_published_or_lies_outside_the_root(
        root: Path, evaluation: dict[str, Any], field: str, fragment: str) -> None:
    with pytest.raises(JobRefused) as info:
        vet(root, **evaluation)
    assert info.value.field == field
    assert info.value.message.startswith(f"{field}: ") and fragment in info.value.message, info.value.message


def test_the_intake_accepts_an_evaluate_job_without_composing_a_config(root: Path) -> None:
    delivery = JobDelivery(tag=1, body=encode_job(new_job("eval-1", "evaluate", evaluation=EVALUATION)),
                           queue="maze.jobs.evaluate", reply_to="reply", correlation_id="c", headers={},
                           redelivered=False, properties=None)
    decision = JobIntake(JobRecords(root)).check(delivery, 3)
    assert isinstance(decision, Accepted) and decision.split is None
    assert decision.job.evaluation is not None
    assert decision.job.evaluation.dataset == str(root.resolve() / "datasets/cartpole/logged-v0")
