"""Checks for the Kubernetes manifests in deploy/k8s, as functions that return a list of problems.

Plain functions over parsed YAML, so test_manifests.py runs them both on the real manifests (no problems
expected) and on edited copies (each edit must be reported), which shows that every check can fail.
"""

from __future__ import annotations

import base64
import copy
import re
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from worker.wire import topology

K8S = Path(__file__).resolve().parents[2] / "deploy" / "k8s"

Objects = dict[str, dict[str, dict[str, Any]]]  # kind -> name -> manifest

API_VERSIONS = {
    "ConfigMap": "v1",
    "Secret": "v1",
    "Service": "v1",
    "Deployment": "apps/v1",
    "PodDisruptionBudget": "policy/v1",
    "ScaledObject": "keda.sh/v1alpha1",
    "TriggerAuthentication": "keda.sh/v1alpha1",
}
DNS_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
ENV_REF = re.compile(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)")
# Answer the states in flight, hand the shards and their episodes over (one heartbeat interval, then seconds
# per shard at most) and flush statistics, with a wide margin: a worker killed before that loses its episodes.
MIN_GRACE_S = 60
HEALTH_PATH = "/healthz"


# ---------------------------------------------------------------- helpers


def index(manifests: list[Any]) -> Objects:
    objects: Objects = {}
    for item in manifests:
        doc = copy.deepcopy(item.doc)
        objects.setdefault(doc["kind"], {})[doc["metadata"]["name"]] = doc
    return objects


def selects(selector: dict[str, str] | None, labels: dict[str, str] | None) -> bool:
    """A matchLabels selector selects labels: non-empty and every pair present."""
    return bool(selector) and all((labels or {}).get(key) == value for key, value in (selector or {}).items())


def secret_values(secret: dict[str, Any]) -> dict[str, str]:
    values = {key: base64.b64decode(value).decode() for key, value in (secret.get("data") or {}).items()}
    values.update({key: str(value) for key, value in (secret.get("stringData") or {}).items()})
    return values


def env_sources(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {entry["name"]: entry for entry in container.get("env") or []}


def effective_args(container: dict[str, Any], objects: Objects) -> list[str]:
    """The container's args with $(VAR) replaced from literal values and ConfigMaps, as the kubelet does."""
    values: dict[str, str] = {}
    for name, entry in env_sources(container).items():
        if "value" in entry:
            values[name] = str(entry["value"])
        ref = (entry.get("valueFrom") or {}).get("configMapKeyRef")
        if ref:
            data = objects.get("ConfigMap", {}).get(ref["name"], {}).get("data") or {}
            if ref["key"] in data:
                values[name] = str(data[ref["key"]])
    return [
        ENV_REF.sub(lambda m: values.get(m.group(1), m.group(0)), str(arg))
        for arg in container.get("args") or []
    ]


def overrides(args: list[str]) -> dict[str, str]:
    """key -> value of the Hydra overrides in a command line."""
    return dict(arg.split("=", 1) for arg in args if "=" in arg and not arg.startswith("-"))


def is_job_worker(deployment: dict[str, Any]) -> bool:
    containers = deployment["spec"]["template"]["spec"]["containers"]
    return any("role=jobs" in (c.get("args") or []) for c in containers)


def quantity(text: str | int) -> float:
    """A Kubernetes quantity (500m, 2Gi, 512Mi, 1) as a number."""
    suffixes = {"m": 1e-3, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "k": 1e3, "M": 1e6, "G": 1e9}
    match = re.fullmatch(r"([0-9.]+)([A-Za-z]*)", str(text))
    if not match or match.group(2) not in ({""} | suffixes.keys()):
        raise ValueError(f"not a Kubernetes quantity: {text!r}")
    return float(match.group(1)) * suffixes.get(match.group(2), 1)


def metrics_port(container: dict[str, Any], objects: Objects) -> int | None:
    value = overrides(effective_args(container, objects)).get("metrics.port")
    return int(value) if value is not None and value.isdigit() else None


def replicas_range(deployment: dict[str, Any], objects: Objects) -> tuple[int, int]:
    """(min, max) replicas: the ScaledObject's bounds when one targets the Deployment, else its replicas."""
    for scaled in objects.get("ScaledObject", {}).values():
        if scaled["spec"]["scaleTargetRef"]["name"] == deployment["metadata"]["name"]:
            return int(scaled["spec"].get("minReplicaCount", 0)), int(scaled["spec"]["maxReplicaCount"])
    replicas = int(deployment["spec"].get("replicas", 1))
    return replicas, replicas


# ---------------------------------------------------------------- checks


def metadata_problems(doc: dict[str, Any]) -> list[str]:
    kind, name = doc.get("kind"), (doc.get("metadata") or {}).get("name")
    problems = []
    if kind not in API_VERSIONS:
        problems.append(f"unexpected kind {kind!r}; expected one of {sorted(API_VERSIONS)}")
    elif doc.get("apiVersion") != API_VERSIONS[kind]:
        problems.append(
            f"{kind} {name}: apiVersion {doc.get('apiVersion')!r}, expected {API_VERSIONS[kind]!r}"
        )
    if not isinstance(name, str) or not DNS_NAME.match(name) or len(name) > 63:
        problems.append(f"{kind}: metadata.name {name!r} is not a DNS label")
    if "namespace" in (doc.get("metadata") or {}):
        problems.append(f"{kind} {name}: sets metadata.namespace; the manifests must stay namespace-agnostic")
    return problems


def env_problems(deployment: dict[str, Any], objects: Objects) -> list[str]:
    name = deployment["metadata"]["name"]
    problems = []
    for container in deployment["spec"]["template"]["spec"]["containers"]:
        sources = env_sources(container)
        for var, entry in sources.items():
            value_from = entry.get("valueFrom") or {}
            if "configMapKeyRef" in value_from:
                ref = value_from["configMapKeyRef"]
                data = objects.get("ConfigMap", {}).get(ref["name"], {}).get("data") or {}
                if ref["key"] not in data:
                    problems.append(
                        f"{name}: env {var} reads ConfigMap {ref['name']!r} key {ref['key']!r}, absent"
                    )
            if "secretKeyRef" in value_from:
                ref = value_from["secretKeyRef"]
                secret = objects.get("Secret", {}).get(ref["name"])
                if secret is None or ref["key"] not in secret_values(secret):
                    problems.append(
                        f"{name}: env {var} reads Secret {ref['name']!r} key {ref['key']!r}, absent"
                    )
        for arg in container.get("args") or []:
            for var in ENV_REF.findall(str(arg)):
                found = sources.get(var)
                if found is None:
                    problems.append(
                        f"{name}: arg {arg!r} uses $({var}), which is not in env (passed literally)"
                    )
                    continue
                value_from = found.get("valueFrom") or {}
                if "secretKeyRef" in value_from:
                    problems.append(f"{name}: arg {arg!r} puts a Secret on the command line, visible to ps")
                ref = value_from.get("configMapKeyRef")
                key = str(arg).split("=", 1)[0]
                if ref and "=" in str(arg) and ref["key"] != key:
                    problems.append(f"{name}: override {key!r} is filled from ConfigMap key {ref['key']!r}")
    return problems


def deployment_problems(deployment: dict[str, Any], objects: Objects, workdir: str) -> list[str]:
    name = deployment["metadata"]["name"]
    spec = deployment["spec"]
    template = spec["template"]
    pod = template["spec"]
    problems = []
    if not selects(spec["selector"].get("matchLabels"), template["metadata"].get("labels")):
        problems.append(f"{name}: spec.selector.matchLabels does not select the pod template's labels")
    grace = pod.get("terminationGracePeriodSeconds", 30)
    if grace < MIN_GRACE_S:
        problems.append(
            f"{name}: terminationGracePeriodSeconds {grace} < {MIN_GRACE_S} (no time for hand-off)"
        )
    pod_security = pod.get("securityContext") or {}
    volumes = {volume["name"] for volume in pod.get("volumes") or []}
    annotations = template["metadata"].get("annotations") or {}
    for container in pod["containers"]:
        security = {**pod_security, **(container.get("securityContext") or {})}
        where = f"{name}/{container.get('name')}"
        if not container.get("image"):
            problems.append(f"{where}: no image")
        if security.get("runAsNonRoot") is not True or security.get("runAsUser", 1) == 0:
            problems.append(f"{where}: securityContext must set runAsNonRoot: true (and no runAsUser 0)")
        if security.get("allowPrivilegeEscalation") is not False:
            problems.append(f"{where}: securityContext.allowPrivilegeEscalation must be false")
        port = metrics_port(container, objects)
        named = {p.get("name"): p.get("containerPort") for p in container.get("ports") or []}
        if port is None:
            problems.append(f"{where}: args set no numeric metrics.port override")
        elif named.get("metrics") != port:
            problems.append(
                f"{where}: container port 'metrics' is {named.get('metrics')}, metrics.port is {port}"
            )
        if annotations.get("prometheus.io/port") not in (None, str(port)):
            problems.append(f"{where}: prometheus.io/port annotation differs from metrics.port {port}")
        probe = (container.get("readinessProbe") or {}).get("httpGet") or {}
        probe_port = named.get(probe.get("port")) if isinstance(probe.get("port"), str) else probe.get("port")
        if probe.get("path") != HEALTH_PATH or probe_port != port:
            problems.append(
                f"{where}: readinessProbe must GET {HEALTH_PATH} on metrics.port {port}, got {probe}"
            )
        command = " ".join(
            (((container.get("lifecycle") or {}).get("preStop") or {}).get("exec") or {}).get("command") or []
        )
        if not re.search(r"kill\s+(-TERM|-15|-s\s+TERM)\b", command) or "kill -0" not in command:
            problems.append(
                f"{where}: lifecycle.preStop must send SIGTERM and wait for the exit, got {command!r}"
            )
        resources = container.get("resources") or {}
        requests, limits = resources.get("requests") or {}, resources.get("limits") or {}
        missing = [f"requests.{k}" for k in ("cpu", "memory") if k not in requests]
        missing += ["limits.memory"] if "memory" not in limits else []
        if missing:
            problems.append(f"{where}: resources lack {', '.join(missing)}")
        elif quantity(requests["memory"]) > quantity(limits["memory"]):
            problems.append(f"{where}: memory request {requests['memory']} above limit {limits['memory']}")
        mounts = {m["mountPath"]: m["name"] for m in container.get("volumeMounts") or []}
        for mount_name in mounts.values():
            if mount_name not in volumes:
                problems.append(f"{where}: volumeMount {mount_name!r} names no pod volume")
        if security.get("readOnlyRootFilesystem"):
            for path in (workdir, "/tmp"):
                if path not in mounts:
                    problems.append(f"{where}: read-only root but nothing writable mounted at {path}")
    return problems + env_problems(deployment, objects)


def pdb_problems(pdb: dict[str, Any], objects: Objects) -> list[str]:
    name = pdb["metadata"]["name"]
    selector = pdb["spec"].get("selector", {}).get("matchLabels")
    targets = [
        d
        for d in objects.get("Deployment", {}).values()
        if selects(selector, d["spec"]["template"]["metadata"]["labels"])
    ]
    if len(targets) != 1:
        return [
            f"PodDisruptionBudget {name}: selector {selector} matches {len(targets)} Deployments, expected 1"
        ]
    low, _ = replicas_range(targets[0], objects)
    spec = pdb["spec"]
    if "minAvailable" in spec and int(spec["minAvailable"]) >= low:
        return [
            f"PodDisruptionBudget {name}: minAvailable {spec['minAvailable']} >= {low} replicas blocks drains"
        ]
    if "maxUnavailable" in spec and int(spec["maxUnavailable"]) < 1:
        return [f"PodDisruptionBudget {name}: maxUnavailable 0 blocks drains"]
    if "minAvailable" not in spec and "maxUnavailable" not in spec:
        return [f"PodDisruptionBudget {name}: sets neither minAvailable nor maxUnavailable"]
    return []


def scaled_object_problems(scaled: dict[str, Any], objects: Objects) -> list[str]:
    name = scaled["metadata"]["name"]
    spec = scaled["spec"]
    target = objects.get("Deployment", {}).get(spec["scaleTargetRef"]["name"])
    problems = []
    if target is None or spec["scaleTargetRef"].get("kind", "Deployment") != "Deployment":
        problems.append(f"ScaledObject {name}: scaleTargetRef {spec['scaleTargetRef']} names no Deployment")
    low, high = int(spec.get("minReplicaCount", 0)), int(spec["maxReplicaCount"])
    if not 0 <= low <= high:
        problems.append(f"ScaledObject {name}: minReplicaCount {low} / maxReplicaCount {high}")
    if target is not None and not low <= int(target["spec"].get("replicas", 1)) <= high:
        problems.append(f"ScaledObject {name}: Deployment replicas outside [{low}, {high}]")
    triggers = [t for t in spec.get("triggers") or [] if t.get("type") == "rabbitmq"]
    if not triggers:
        problems.append(f"ScaledObject {name}: no rabbitmq trigger")
    for trigger in triggers:
        meta = trigger.get("metadata") or {}
        if meta.get("mode") not in ("QueueLength", "MessageRate") or float(meta.get("value", 0)) <= 0:
            problems.append(
                f"ScaledObject {name}: trigger needs mode QueueLength/MessageRate and a value > 0"
            )
        if str(meta.get("useRegex")).lower() == "true" and meta.get("protocol") != "http":
            problems.append(
                f"ScaledObject {name}: useRegex needs protocol http (KEDA), got {meta.get('protocol')}"
            )
        try:
            re.compile(str(meta.get("queueName")))
        except re.error as error:
            problems.append(f"ScaledObject {name}: queueName is not a valid pattern: {error}")
        auth_name = str((trigger.get("authenticationRef") or {}).get("name"))
        auth = objects.get("TriggerAuthentication", {}).get(auth_name)
        if auth is None:
            if "host" not in meta and "hostFromEnv" not in meta:
                problems.append(
                    f"ScaledObject {name}: authenticationRef {auth_name!r} names no TriggerAuthentication"
                )
            continue
        refs = auth["spec"].get("secretTargetRef") or []
        if "host" not in {ref["parameter"] for ref in refs}:
            problems.append(f"TriggerAuthentication {auth_name}: no 'host' parameter")
        for ref in refs:
            secret = objects.get("Secret", {}).get(ref["name"])
            if secret is None or ref["key"] not in secret_values(secret):
                problems.append(
                    f"TriggerAuthentication {auth_name}: Secret {ref['name']!r} key {ref['key']!r} absent"
                )
    return problems


def agent_scaling_problems(objects: Objects) -> list[str]:
    """The agent scaler watches exactly the shard queues and never asks for more workers than shards."""
    problems = []
    for scaled in objects.get("ScaledObject", {}).values():
        target = objects.get("Deployment", {}).get(scaled["spec"]["scaleTargetRef"]["name"])
        if target is None or is_job_worker(target):
            continue
        container = target["spec"]["template"]["spec"]["containers"][0]
        settings = overrides(effective_args(container, objects))
        prefix, shards = settings.get("broker.prefix", "maze"), int(settings.get("broker.shards", "16"))
        if int(scaled["spec"]["maxReplicaCount"]) > shards:
            problems.append(
                f"ScaledObject {scaled['metadata']['name']}: maxReplicaCount above {shards} shards"
            )
        # The worker's own naming functions, so a change of naming there shows up here.
        shard_queues = topology.shard_queues(prefix, shards)
        others = [
            topology.states_exchange(prefix),
            topology.dead_letter_queue(prefix),
            topology.jobs_queue(prefix, "train"),
            topology.jobs_queue(prefix, "rollout"),
            topology.shard_queues(f"x{prefix}", shards)[0],
        ]
        for trigger in scaled["spec"].get("triggers") or []:
            pattern = re.compile(str(trigger["metadata"]["queueName"]))
            missed = [q for q in shard_queues if not pattern.search(q)]
            caught = [q for q in others if pattern.search(q)]
            if missed or caught:
                problems.append(
                    f"trigger {pattern.pattern!r}: misses shard queues {missed[:3]}, counts {caught}"
                )
    return problems


def secret_problems(secret: dict[str, Any]) -> list[str]:
    name = secret["metadata"]["name"]
    values = secret_values(secret)
    if not values:
        return [f"Secret {name}: neither data nor stringData"]
    problems = []
    if "MAZE_AMQP_URL" in values:
        url = urlsplit(values["MAZE_AMQP_URL"])
        if url.scheme not in ("amqp", "amqps") or not url.hostname:
            problems.append(f"Secret {name}: MAZE_AMQP_URL must be amqp:// or amqps:// with a host")
    if "RABBITMQ_MANAGEMENT_URL" in values:
        url = urlsplit(values["RABBITMQ_MANAGEMENT_URL"])
        if url.scheme not in ("http", "https") or not url.hostname or not url.path:
            problems.append(f"Secret {name}: RABBITMQ_MANAGEMENT_URL must be http(s)://host:port/ (KEDA)")
    return problems


def service_problems(service: dict[str, Any], objects: Objects) -> list[str]:
    name = service["metadata"]["name"]
    selector = service["spec"].get("selector")
    targets = [
        d
        for d in objects.get("Deployment", {}).values()
        if selects(selector, d["spec"]["template"]["metadata"]["labels"])
    ]
    if not targets:
        return [f"Service {name}: selector {selector} matches no Deployment's pods"]
    problems = []
    for port in service["spec"]["ports"]:
        target_port = port.get("targetPort", port["port"])
        for deployment in targets:
            container_ports = [
                p for c in deployment["spec"]["template"]["spec"]["containers"] for p in c.get("ports") or []
            ]
            key = "name" if isinstance(target_port, str) else "containerPort"
            if not any(p.get(key) == target_port for p in container_ports):
                owner = deployment["metadata"]["name"]
                problems.append(f"Service {name}: targetPort {target_port!r} not exposed by {owner}")
    return problems


def all_problems(objects: Objects, workdir: str) -> list[str]:
    problems = [p for kind in objects.values() for doc in kind.values() for p in metadata_problems(doc)]
    for deployment in objects.get("Deployment", {}).values():
        problems += deployment_problems(deployment, objects, workdir)
    for pdb in objects.get("PodDisruptionBudget", {}).values():
        problems += pdb_problems(pdb, objects)
    for scaled in objects.get("ScaledObject", {}).values():
        problems += scaled_object_problems(scaled, objects)
    for secret in objects.get("Secret", {}).values():
        problems += secret_problems(secret)
    for service in objects.get("Service", {}).values():
        problems += service_problems(service, objects)
    return problems + agent_scaling_problems(objects)
