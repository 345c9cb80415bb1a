"""deploy/k8s: every manifest parsed and cross-checked (labels, probes, config wiring, scaling, security).

The checks live in manifest_checks.py; `test_checks_catch` edits a copy of the manifests in one way each and
asserts the edit is reported, so none of the checks passes vacuously.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable
from typing import Any

import pytest
import yaml
from manifest_checks import (
    K8S,
    Objects,
    agent_scaling_problems,
    all_problems,
    deployment_problems,
    effective_args,
    index,
    is_job_worker,
    metadata_problems,
    pdb_problems,
    scaled_object_problems,
    secret_problems,
    selects,
    service_problems,
)

# ---------------------------------------------------------------- tests on the real manifests


@pytest.fixture(scope="module")
def objects(manifests: list[Any]) -> Objects:
    return index(manifests)


@pytest.fixture(scope="module")
def workdir(dockerfile: Any) -> str:
    """The image's final WORKDIR, where Hydra writes its run directory."""
    return str(dockerfile.of("WORKDIR", dockerfile.final_stage)[-1].args)


def test_every_document_has_kind_api_version_and_name(manifests: list[Any]) -> None:
    assert manifests, "deploy/k8s holds no manifests"
    problems = [p for item in manifests for p in metadata_problems(item.doc)]
    assert not problems, "\n".join(problems)


def test_expected_objects_exist(objects: Objects) -> None:
    assert {"ConfigMap", "Secret", "Deployment", "Service", "PodDisruptionBudget", "ScaledObject"} <= set(
        objects
    )
    deployments = list(objects["Deployment"].values())
    assert sum(not is_job_worker(d) for d in deployments) == 1, "one Deployment of agent workers"
    assert sum(is_job_worker(d) for d in deployments) == 1, "one Deployment of job workers (role=jobs)"


@pytest.mark.parametrize("kind", ["Deployment", "PodDisruptionBudget", "ScaledObject", "Secret", "Service"])
def test_kind_has_no_problems(kind: str, objects: Objects, workdir: str) -> None:
    checks: dict[str, Callable[[dict[str, Any]], list[str]]] = {
        "Deployment": lambda doc: deployment_problems(doc, objects, workdir),
        "PodDisruptionBudget": lambda doc: pdb_problems(doc, objects),
        "ScaledObject": lambda doc: scaled_object_problems(doc, objects),
        "Secret": secret_problems,
        "Service": lambda doc: service_problems(doc, objects),
    }
    problems = [p for doc in objects[kind].values() for p in checks[kind](doc)]
    assert not problems, "\n".join(problems)


def test_every_deployment_has_a_disruption_budget(objects: Objects) -> None:
    for deployment in objects["Deployment"].values():
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        budgets = [
            p
            for p in objects["PodDisruptionBudget"].values()
            if selects(p["spec"]["selector"]["matchLabels"], labels)
        ]
        assert budgets, f"no PodDisruptionBudget selects {deployment['metadata']['name']}"


def test_agent_scaler_watches_the_shard_queues(objects: Objects) -> None:
    problems = agent_scaling_problems(objects)
    assert not problems, "\n".join(problems)


def test_kustomization_lists_every_manifest() -> None:
    (kustomization,) = yaml.safe_load_all((K8S / "kustomization.yaml").read_text())
    assert kustomization["kind"] == "Kustomization"
    listed = set(kustomization["resources"])
    present = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert listed == present, (
        f"listed but missing: {listed - present}; present but not listed: {present - listed}"
    )


def test_kustomization_images_name_the_containers_image(objects: Objects) -> None:
    (kustomization,) = yaml.safe_load_all((K8S / "kustomization.yaml").read_text())
    images = {
        c["image"].rsplit(":", 1)[0]
        for d in objects["Deployment"].values()
        for c in d["spec"]["template"]["spec"]["containers"]
    }
    assert {entry["name"] for entry in kustomization.get("images", [])} <= images


def test_pods_run_as_the_image_user(objects: Objects, dockerfile: Any) -> None:
    user = dockerfile.of("USER", dockerfile.final_stage)[-1].args.split(":")[0]
    for deployment in objects["Deployment"].values():
        pod_security = deployment["spec"]["template"]["spec"].get("securityContext") or {}
        assert str(pod_security.get("runAsUser")) == user, (
            f"{deployment['metadata']['name']} vs Dockerfile USER"
        )


def test_configmap_keys_are_all_passed_to_a_worker(objects: Objects) -> None:
    """A ConfigMap key that no Deployment reads is a setting that silently does nothing."""
    used = {
        (ref["name"], ref["key"])
        for d in objects["Deployment"].values()
        for c in d["spec"]["template"]["spec"]["containers"]
        for entry in c.get("env") or []
        if (ref := (entry.get("valueFrom") or {}).get("configMapKeyRef"))
    }
    for name, config_map in objects["ConfigMap"].items():
        unused = {key for key in config_map["data"] if (name, key) not in used}
        assert not unused, f"ConfigMap {name} keys no Deployment reads: {sorted(unused)}"


@pytest.mark.parametrize("deployment_name", ["maze-agent-worker", "maze-job-worker"])
def test_deployment_args_are_valid_worker_config(
    deployment_name: str, objects: Objects, worker_config: Any
) -> None:
    """The args, ConfigMap values filled in, compose with conf_worker.yaml as `maze-worker ...` would."""
    deployment = objects["Deployment"][deployment_name]
    for container in deployment["spec"]["template"]["spec"]["containers"]:
        args = effective_args(container, objects)
        worker_config.skip_unless_supported(args)
        assert worker_config.problems(args) == []


@pytest.mark.parametrize(
    ("key", "value"),
    [("broker.shards", "0"), ("metrics.port", "http"), ("env.name", "NoSuchEnv-v0"), ("batch.max_size", "0")],
)
def test_bad_configmap_values_are_caught(key: str, value: str, objects: Objects, worker_config: Any) -> None:
    """The worker-config check above would fail on a ConfigMap value the worker itself refuses."""
    edited = copy.deepcopy(objects)
    next(iter(edited["ConfigMap"].values()))["data"][key] = value
    container = edited["Deployment"]["maze-agent-worker"]["spec"]["template"]["spec"]["containers"][0]
    problems = worker_config.problems(effective_args(container, edited))
    assert problems and key in problems[0], problems


# ---------------------------------------------------------------- the checks can fail


def _agent(objects: Objects) -> dict[str, Any]:
    return next(d for d in objects["Deployment"].values() if not is_job_worker(d))


def _container(objects: Objects) -> dict[str, Any]:
    return _agent(objects)["spec"]["template"]["spec"]["containers"][0]


def _env(objects: Objects, var: str) -> dict[str, Any]:
    return next(e for e in _container(objects)["env"] if e["name"] == var)


MUTATIONS: dict[str, tuple[Callable[[Objects], None], str]] = {
    "template label differs": (
        lambda o: _agent(o)["spec"]["template"]["metadata"]["labels"].update(
            {"app.kubernetes.io/component": "x"}
        ),
        "does not select the pod template",
    ),
    "probe on /metrics": (
        lambda o: _container(o)["readinessProbe"]["httpGet"].update(path="/metrics"),
        "readinessProbe",
    ),
    "port not metrics.port": (
        lambda o: _container(o)["ports"][0].update(containerPort=9200),
        "container port 'metrics'",
    ),
    "no preStop": (lambda o: _container(o).pop("lifecycle"), "preStop"),
    "preStop only sleeps": (
        lambda o: _container(o)["lifecycle"]["preStop"]["exec"].update(command=["sleep", "5"]),
        "preStop",
    ),
    "short grace period": (
        lambda o: _agent(o)["spec"]["template"]["spec"].update(terminationGracePeriodSeconds=10),
        "terminationGracePeriodSeconds",
    ),
    "may run as root": (
        lambda o: _agent(o)["spec"]["template"]["spec"]["securityContext"].update(runAsNonRoot=False),
        "runAsNonRoot",
    ),
    "no memory limit": (lambda o: _container(o)["resources"].pop("limits"), "limits.memory"),
    "no writable workdir": (
        lambda o: _container(o).update(
            volumeMounts=[m for m in _container(o)["volumeMounts"] if m["mountPath"] == "/tmp"]
        ),
        "nothing writable",
    ),
    "config keys swapped": (
        lambda o: _env(o, "MAZE_CFG_BROKER_PREFIX")["valueFrom"]["configMapKeyRef"].update(
            key="broker.shards"
        ),
        "is filled from ConfigMap key",
    ),
    "undefined $(VAR)": (lambda o: _container(o)["args"].append("batch.max_size=$(NOPE)"), "not in env"),
    "secret on the command line": (
        lambda o: _container(o)["args"].append("broker.url=$(MAZE_AMQP_URL)"),
        "Secret on the command line",
    ),
    "missing ConfigMap key": (
        lambda o: next(iter(o["ConfigMap"].values()))["data"].pop("broker.prefetch"),
        "absent",
    ),
    "PDB selects nothing": (
        lambda o: next(iter(o["PodDisruptionBudget"].values()))["spec"]["selector"]["matchLabels"].update(
            x="y"
        ),
        "matches 0 Deployments",
    ),
    "PDB blocks drains": (
        lambda o: next(iter(o["PodDisruptionBudget"].values()))["spec"].update(minAvailable=99),
        "blocks drains",
    ),
    "scaler targets nothing": (
        lambda o: next(iter(o["ScaledObject"].values()))["spec"]["scaleTargetRef"].update(name="gone"),
        "names no Deployment",
    ),
    "more workers than shards": (
        lambda o: next(iter(o["ConfigMap"].values()))["data"].update({"broker.shards": "4"}),
        "above 4 shards",
    ),
    "prefix changed, pattern not": (
        lambda o: next(iter(o["ConfigMap"].values()))["data"].update({"broker.prefix": "prod"}),
        "misses shard queues",
    ),
    "regex over amqp": (
        lambda o: next(iter(o["ScaledObject"].values()))["spec"]["triggers"][0]["metadata"].update(
            protocol="amqp"
        ),
        "useRegex needs protocol http",
    ),
    "service port not exposed": (
        lambda o: next(iter(o["Service"].values()))["spec"]["ports"][0].update(targetPort="http"),
        "targetPort 'http'",
    ),
    "broker URL not amqp": (
        lambda o: next(iter(o["Secret"].values()))["stringData"].update(MAZE_AMQP_URL="http://rabbitmq"),
        "MAZE_AMQP_URL",
    ),
    "namespace pinned": (
        lambda o: _agent(o)["metadata"].update(namespace="prod"),
        "namespace-agnostic",
    ),
}


def test_real_manifests_have_no_problems(objects: Objects, workdir: str) -> None:
    problems = all_problems(copy.deepcopy(objects), workdir)
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("mutation", sorted(MUTATIONS))
def test_checks_catch(mutation: str, objects: Objects, workdir: str) -> None:
    edit, expected = MUTATIONS[mutation]
    edited = copy.deepcopy(objects)
    edit(edited)
    problems = all_problems(edited, workdir)
    assert any(expected in problem for problem in problems), f"{mutation!r} not caught; problems: {problems}"


def test_job_scaler_counts_queued_and_running_jobs(objects: Objects) -> None:
    """Running jobs sit in their workers' lease queues: a scaler that missed them would stop running jobs."""
    from worker.wire import topology

    scaled = objects["ScaledObject"]["maze-job-worker"]
    pattern = re.compile(str(scaled["spec"]["triggers"][0]["metadata"]["queueName"]))
    counted = [*(topology.jobs_queue("maze", kind) for kind in topology.JOB_KINDS),
               topology.lease_queue("maze", "job-worker-7f9c-1-abc123")]
    ignored = [topology.dead_letter_queue("maze"), topology.shard_queue("maze", 3),
               topology.jobs_queue("other", "train")]
    assert all(pattern.search(name) for name in counted), pattern.pattern
    assert not any(pattern.search(name) for name in ignored), pattern.pattern
