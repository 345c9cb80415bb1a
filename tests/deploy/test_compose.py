"""deploy/docker-compose.yml: services, healthchecks, start order, mounts and the worker command lines.

Docker does not run where the tests run, so the file is parsed and checked against the Dockerfile, the
mounted files and the worker's own config instead of being started.
"""

from __future__ import annotations

import copy
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
RABBITMQ_IMAGE = "rabbitmq:3.10-management"
REQUIRED_PLUGINS = {"rabbitmq_management", "rabbitmq_consistent_hash_exchange"}
MIN_STOP_GRACE_S = 60
Services = dict[str, dict[str, Any]]


# ---------------------------------------------------------------- helpers


def environment(service: dict[str, Any]) -> dict[str, str]:
    """A service's environment, from either the mapping or the KEY=VALUE list form."""
    env = service.get("environment") or {}
    if isinstance(env, list):
        return dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {str(key): str(value) for key, value in env.items()}


def interpolation_default(value: str) -> str:
    """`${VAR:-default}` -> default (what compose uses when VAR is unset); other text unchanged."""
    match = re.fullmatch(r"\$\{\w+:?-(.*)\}", value)
    return match.group(1) if match else value


def seconds(duration: str | int) -> float:
    """A compose duration (90s, 1m30s, 2m) in seconds."""
    parts = re.findall(r"(\d+(?:\.\d+)?)(h|ms|m|s|us)", str(duration))
    if not parts or "".join(n + u for n, u in parts) != str(duration):
        raise ValueError(f"not a compose duration: {duration!r}")
    scale = {"h": 3600, "m": 60, "s": 1, "ms": 1e-3, "us": 1e-6}
    return sum(float(number) * scale[unit] for number, unit in parts)


def overrides(command: list[str]) -> dict[str, str]:
    return dict(item.split("=", 1) for item in command if "=" in item and not item.startswith("-"))


def built_here(service: dict[str, Any]) -> bool:
    return "build" in service


def workers(services: Services) -> Services:
    """Services running maze-worker: the project's image with its own ENTRYPOINT."""
    return {name: s for name, s in services.items() if built_here(s) and "entrypoint" not in s}


def agent_workers(services: Services) -> Services:
    return {n: s for n, s in workers(services).items() if "role=jobs" not in (s.get("command") or [])}


def job_workers(services: Services) -> Services:
    return {n: s for n, s in workers(services).items() if "role=jobs" in (s.get("command") or [])}


def producers(services: Services) -> Services:
    return {n: s for n, s in services.items() if "worker.demo" in " ".join(s.get("entrypoint") or [])}


def bind_mounts(service: dict[str, Any]) -> list[tuple[str, str]]:
    """(host path, container path) of the short-form bind mounts (named volumes left out)."""
    mounts = []
    for volume in service.get("volumes") or []:
        source, _, rest = str(volume).partition(":")
        if source.startswith((".", "/")):
            mounts.append((source, rest.split(":", 1)[0]))
    return mounts


def parse_enabled_plugins(text: str) -> set[str]:
    """The plugin names of an enabled_plugins file, which must be one Erlang list term: `[a,b].`"""
    match = re.fullmatch(r"\s*\[\s*([a-z0-9_]+(?:\s*,\s*[a-z0-9_]+)*)?\s*\]\s*\.\s*", text)
    if match is None:
        raise ValueError(f"enabled_plugins is not an Erlang list term like [a,b].: {text!r}")
    return {name.strip() for name in (match.group(1) or "").split(",") if name.strip()}


def has_healthcheck(service: dict[str, Any], image_has_healthcheck: bool) -> bool:
    own = service.get("healthcheck")
    if own is not None:
        return not own.get("disable") and bool(own.get("test"))
    return built_here(service) and image_has_healthcheck


# ---------------------------------------------------------------- checks


def compose_problems(services: Services, image_has_healthcheck: bool) -> list[str]:
    problems = []
    rabbit = {n: s for n, s in services.items() if str(s.get("image", "")).startswith("rabbitmq:")}
    if list(rabbit.values()) != [services.get("rabbitmq")]:
        problems.append(f"expected one broker service named 'rabbitmq', found {sorted(rabbit)}")
    for name, service in rabbit.items():
        if service.get("image") != RABBITMQ_IMAGE:
            problems.append(f"{name}: image {service.get('image')!r}, expected {RABBITMQ_IMAGE!r}")
        if not has_healthcheck(service, False):
            problems.append(f"{name}: no healthcheck, so nothing can wait for it with service_healthy")
        plugin_files = [
            src for src, target in bind_mounts(service) if target == "/etc/rabbitmq/enabled_plugins"
        ]
        if not plugin_files:
            problems.append(f"{name}: no enabled_plugins file mounted at /etc/rabbitmq/enabled_plugins")
        for source in plugin_files:
            path = DEPLOY / source
            if path.is_file():
                missing = REQUIRED_PLUGINS - parse_enabled_plugins(path.read_text())
                if missing:
                    problems.append(f"{name}: {source} does not enable {sorted(missing)}")
    if len(agent_workers(services)) < 2:
        problems.append(f"expected two agent workers, found {sorted(agent_workers(services))}")
    if len(job_workers(services)) != 1:
        problems.append(f"expected one job worker (role=jobs), found {sorted(job_workers(services))}")
    if len(producers(services)) != 1:
        problems.append(
            f"expected one demo producer (python -m worker.demo), found {sorted(producers(services))}"
        )

    for name, service in services.items():
        for source, _ in bind_mounts(service):
            if not (DEPLOY / source).exists():
                problems.append(f"{name}: mounts {source}, which does not exist next to the compose file")
        if built_here(service):
            build = service["build"]
            context = DEPLOY / build.get("context", ".")
            if not (context / build.get("dockerfile", "Dockerfile")).is_file():
                problems.append(f"{name}: build {build} names no Dockerfile")
        for target, condition in (service.get("depends_on") or {}).items():
            if target not in services:
                problems.append(f"{name}: depends on unknown service {target!r}")
            elif condition.get("condition") == "service_healthy" and not has_healthcheck(
                services[target], image_has_healthcheck
            ):
                problems.append(f"{name}: waits for {target} to be healthy, but {target} has no healthcheck")

    for name, service in {**workers(services), **producers(services)}.items():
        # Workers need the broker; the producer needs the agent workers (they declare what it publishes to).
        needs = set(agent_workers(services)) if name in producers(services) else {"rabbitmq"}
        for target in needs:
            condition = ((service.get("depends_on") or {}).get(target) or {}).get("condition")
            if condition != "service_healthy":
                problems.append(f"{name}: must depend on {target} with condition service_healthy")
        url = urlsplit(interpolation_default(environment(service).get("MAZE_AMQP_URL", "")))
        if url.scheme not in ("amqp", "amqps") or url.hostname not in services:
            problems.append(f"{name}: MAZE_AMQP_URL must default to an amqp URL of a compose service")

    for name, service in producers(services).items():
        entrypoint = [str(item) for item in service["entrypoint"]]
        prefix = entrypoint[entrypoint.index("--prefix") + 1] if "--prefix" in entrypoint else "maze"
        for worker_name, worker in agent_workers(services).items():
            if overrides(worker.get("command") or []).get("broker.prefix", "maze") != prefix:
                problems.append(f"{name}: publishes to prefix {prefix!r}, {worker_name} serves another")

    for name, service in workers(services).items():
        command = service.get("command") or []
        port = overrides(command).get("metrics.port")
        if port is None or not port.isdigit() or int(port) == 0:
            problems.append(f"{name}: command sets no metrics.port (0 turns /healthz off)")
            continue
        if environment(service).get("MAZE_METRICS_PORT", "9100") != port:
            problems.append(
                f"{name}: MAZE_METRICS_PORT (the image HEALTHCHECK's port) differs from metrics.port"
            )
        for mapping in service.get("ports") or []:
            if str(mapping).rsplit(":", 1)[-1].split("/")[0] != port:
                problems.append(f"{name}: publishes {mapping}, but the worker listens on {port}")
        if seconds(service.get("stop_grace_period", "10s")) < MIN_STOP_GRACE_S:
            problems.append(
                f"{name}: stop_grace_period below {MIN_STOP_GRACE_S}s leaves no time to answer in-flight"
            )
    return problems


# ---------------------------------------------------------------- tests


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> Services:
    return dict(compose["services"])


@pytest.fixture(scope="module")
def image_has_healthcheck(dockerfile: Any) -> bool:
    return bool(dockerfile.of("HEALTHCHECK", dockerfile.final_stage))


def test_compose_file_has_no_problems(services: Services, image_has_healthcheck: bool) -> None:
    problems = compose_problems(services, image_has_healthcheck)
    assert not problems, "\n".join(problems)


def test_enabled_plugins_parser_rejects_a_missing_full_stop() -> None:
    assert parse_enabled_plugins("[a,b].\n") == {"a", "b"}
    with pytest.raises(ValueError, match="Erlang list term"):
        parse_enabled_plugins("[rabbitmq_management,rabbitmq_consistent_hash_exchange]")


@pytest.mark.parametrize("service_name", ["agent-worker-1", "agent-worker-2", "job-worker"])
def test_worker_command_is_valid_worker_config(
    service_name: str, services: Services, worker_config: Any
) -> None:
    command = [str(item) for item in services[service_name]["command"]]
    worker_config.skip_unless_supported(command)
    assert worker_config.problems(command) == []


def test_producer_flags_exist_in_worker_demo(services: Services) -> None:
    """The producer's entrypoint flags are accepted by `python -m worker.demo` (its --help lists them)."""
    if not (ROOT / "worker" / "demo.py").is_file():
        pytest.skip(
            "worker/demo.py does not exist: producer flags cannot be checked"
        )
    (producer,) = producers(services).values()
    entrypoint = [str(item) for item in producer["entrypoint"]]
    assert entrypoint[:3] == ["python", "-m", "worker.demo"]
    result = subprocess.run(
        [sys.executable, "-m", "worker.demo", "--help"], capture_output=True, text=True, timeout=60, cwd=ROOT
    )
    assert result.returncode == 0, result.stderr
    for flag in (item.split("=", 1)[0] for item in entrypoint[3:] if item.startswith("--")):
        assert flag in result.stdout, f"worker.demo does not offer {flag}:\n{result.stdout}"


MUTATIONS: dict[str, tuple[Callable[[Services], object], str]] = {
    "broker without healthcheck": (lambda s: s["rabbitmq"].pop("healthcheck"), "no healthcheck"),
    "other broker version": (
        lambda s: s["rabbitmq"].update(image="rabbitmq:3.13-management"),
        "expected 'rabbitmq:3.10",
    ),
    "plugins file not mounted": (
        lambda s: s["rabbitmq"].update(
            volumes=[v for v in s["rabbitmq"]["volumes"] if "enabled_plugins" not in v]
        ),
        "no enabled_plugins",
    ),
    "worker starts before the broker is healthy": (
        lambda s: s["agent-worker-1"]["depends_on"]["rabbitmq"].update(condition="service_started"),
        "condition service_healthy",
    ),
    "producer waits on a worker without healthcheck": (
        lambda s: s["agent-worker-2"].update(healthcheck={"disable": True}),
        "has no healthcheck",
    ),
    "metrics port mismatch": (
        lambda s: s["agent-worker-1"].update(command=["env=gym_env", "metrics.port=9200"]),
        "MAZE_METRICS_PORT",
    ),
    "broker URL to nowhere": (
        lambda s: s["job-worker"]["environment"].update(MAZE_AMQP_URL="amqp://guest:guest@broker:5672/%2F"),
        "MAZE_AMQP_URL",
    ),
    "one agent worker": (lambda s: s.pop("agent-worker-2"), "expected two agent workers"),
    "producer on another prefix": (
        lambda s: s["agent-worker-2"].update(command=["broker.prefix=prod", "metrics.port=9100"]),
        "serves another",
    ),
    "short stop grace": (lambda s: s["job-worker"].update(stop_grace_period="5s"), "stop_grace_period"),
    "missing mounted file": (
        lambda s: s["rabbitmq"]["volumes"].append("./rabbitmq/absent.conf:/etc/rabbitmq/conf.d/30.conf"),
        "does not exist",
    ),
}


@pytest.mark.parametrize("mutation", sorted(MUTATIONS))
def test_checks_catch(mutation: str, services: Services, image_has_healthcheck: bool) -> None:
    edit, expected = MUTATIONS[mutation]
    edited = copy.deepcopy(services)
    edit(edited)
    problems = compose_problems(edited, image_has_healthcheck)
    assert any(expected in problem for problem in problems), f"{mutation!r} not caught; problems: {problems}"
