"""deploy/rabbitmq: the broker's limits and the least-privilege definitions, checked against the topology.

The permission patterns are matched the way RabbitMQ matches them (an unanchored regex search on the
resource name; the default exchange is the resource `amq.default`) against the names that
worker.wire.topology derives from the prefix, so a renamed queue that a role can no longer reach, or a
pattern that grants more than its role needs, fails here. `test_checks_catch` edits a copy of the
definitions in one way each and asserts the edit is reported. tests/worker/test_broker_limits.py loads the
same file into a real broker.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import pytest
import yaml

from worker.wire import declarations, topology

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
RABBITMQ = DEPLOY / "rabbitmq"
DEFINITIONS = RABBITMQ / "definitions.json"
PREFIX = topology.DEFAULT_PREFIX
DEFAULT_EXCHANGE = "amq.default"
"""The resource name RabbitMQ checks for a publish to the default exchange (routing key = a queue name)."""
SERVER_NAMED = "amq.gen-JzTY20BRgKO-HjmUJj0wLg"
"""A server-named queue, as `queue_declare("")` creates for reply and event queues."""
ROLES = ("worker", "producer", "submitter", "monitor")
Definitions = dict[str, Any]


# ---------------------------------------------------------------- what each role must and must not reach


def worker_queues() -> list[str]:
    """Every queue an agent or job worker declares, consumes or reads."""
    specs = [
        declarations.worker_topology(PREFIX),
        declarations.cluster_topology(PREFIX),
        declarations.jobs_topology(PREFIX),
    ]
    names = [queue.name for spec in specs for queue in spec.queues]
    return [
        *names,
        topology.worker_queue(PREFIX, "vm-12-ab12cd"),
        topology.lease_queue(PREFIX, "jobs-7-ef34"),
        SERVER_NAMED,
    ]


def worker_exchanges() -> list[str]:
    specs = [
        declarations.worker_topology(PREFIX),
        declarations.cluster_topology(PREFIX),
        declarations.jobs_topology(PREFIX),
    ]
    return sorted({exchange.name for spec in specs for exchange in spec.exchanges})


def state_path() -> list[str]:
    """What carries states and replies between workers: no client may read or write these directly."""
    return [
        *topology.shard_queues(PREFIX),
        *topology.handoff_queues(PREFIX),
        topology.dead_letter_queue(PREFIX),
        topology.worker_queue(PREFIX, "vm-12-ab12cd"),
    ]


def job_queues() -> list[str]:
    return [topology.jobs_queue(PREFIX, kind) for kind in topology.JOB_KINDS]


# (role, operation) -> (names that must match, names that must not)
EXPECTED: dict[tuple[str, str], tuple[Callable[[], list[str]], Callable[[], list[str]]]] = {
    ("worker", "configure"): (lambda: worker_queues() + worker_exchanges(), lambda: [DEFAULT_EXCHANGE]),
    ("worker", "write"): (lambda: worker_queues() + worker_exchanges() + [DEFAULT_EXCHANGE], lambda: []),
    ("worker", "read"): (lambda: worker_queues() + worker_exchanges(), lambda: [DEFAULT_EXCHANGE]),
    ("producer", "configure"): (
        lambda: [SERVER_NAMED],
        lambda: state_path() + job_queues() + worker_exchanges() + [DEFAULT_EXCHANGE],
    ),
    ("producer", "write"): (
        lambda: [topology.states_exchange(PREFIX)],
        lambda: (
            state_path()
            + job_queues()
            + [
                DEFAULT_EXCHANGE,
                topology.dead_letter_exchange(PREFIX),
                topology.events_exchange(PREFIX),
                topology.control_exchange(PREFIX),
                topology.workers_exchange(PREFIX),
                topology.policies_exchange(PREFIX),
                topology.jobs_return_exchange(PREFIX),
                SERVER_NAMED,
            ]
        ),
    ),
    ("producer", "read"): (lambda: [SERVER_NAMED], lambda: state_path() + job_queues() + worker_exchanges()),
    ("submitter", "configure"): (
        lambda: [SERVER_NAMED],
        lambda: state_path() + job_queues() + worker_exchanges() + [DEFAULT_EXCHANGE],
    ),
    ("submitter", "write"): (
        lambda: [DEFAULT_EXCHANGE, SERVER_NAMED],
        lambda: (
            state_path()
            + job_queues()
            + [
                topology.states_exchange(PREFIX),
                topology.events_exchange(PREFIX),
                topology.control_exchange(PREFIX),
                topology.dead_letter_exchange(PREFIX),
                topology.policies_exchange(PREFIX),
                topology.workers_exchange(PREFIX),
                topology.jobs_return_exchange(PREFIX),
            ]
        ),
    ),
    ("submitter", "read"): (
        lambda: [topology.events_exchange(PREFIX), SERVER_NAMED],
        lambda: (
            state_path()
            + job_queues()
            + [
                topology.states_exchange(PREFIX),
                topology.control_exchange(PREFIX),
                topology.policies_exchange(PREFIX),
            ]
        ),
    ),
    ("monitor", "configure"): (lambda: [], lambda: worker_queues() + worker_exchanges() + [DEFAULT_EXCHANGE]),
    ("monitor", "write"): (lambda: [], lambda: worker_queues() + worker_exchanges() + [DEFAULT_EXCHANGE]),
    ("monitor", "read"): (lambda: [], lambda: worker_queues() + worker_exchanges()),
}
EVENT_KEY = topology.job_event_routing_key("cartpole-ppo-7", "started")
# (role, operation on the events exchange) -> (routing or binding keys allowed, keys refused)
TOPIC_EXPECTED: dict[tuple[str, str], tuple[list[str], list[str]]] = {
    ("worker", "write"): ([EVENT_KEY], ["other.key", ""]),
    ("worker", "read"): ([], ["#", EVENT_KEY]),
    ("submitter", "write"): ([], [EVENT_KEY, "#"]),
    ("submitter", "read"): (["job.cartpole-ppo-7.*"], ["#", "*.*.*", "other.key"]),
}


# ---------------------------------------------------------------- checks


def user_of(definitions: Definitions, role: str) -> str:
    return f"{vhost_of(definitions)}-{role}"


def vhost_of(definitions: Definitions) -> str:
    vhosts = definitions.get("vhosts") or [{}]
    return str(vhosts[0].get("name"))


def matches(pattern: str, name: str) -> bool:
    """RabbitMQ's test: an unanchored regex search (`re:run`) of the resource name."""
    return re.search(pattern, name) is not None


def definitions_problems(definitions: Definitions) -> list[str]:
    problems = []
    vhosts = [entry.get("name") for entry in definitions.get("vhosts") or []]
    if len(vhosts) != 1:
        return [f"expected one virtual host, found {vhosts}"]
    vhost = vhosts[0]
    users = {user["name"]: user for user in definitions.get("users") or []}
    for role in ROLES:
        if user_of(definitions, role) not in users:
            problems.append(f"no user {user_of(definitions, role)} for the {role} role")
    for name, user in users.items():
        if user.get("password_hash"):
            problems.append(
                f"user {name} has a password hash: never commit one (set it with change_password)"
            )
        if set(user.get("tags") or []) - {"monitoring"} or (
            ("monitoring" in (user.get("tags") or [])) != (name == user_of(definitions, "monitor"))
        ):
            problems.append(
                f"user {name}: tags {user.get('tags')}, only the monitor user has one (monitoring)"
            )
    permissions = {entry["user"]: entry for entry in definitions.get("permissions") or []}
    for entry in permissions.values():
        if entry.get("vhost") != vhost:
            problems.append(f"permissions of {entry['user']} on vhost {entry.get('vhost')!r}, not {vhost!r}")
        if entry["user"] not in users:
            problems.append(f"permissions for unknown user {entry['user']}")
    for (role, operation), (allowed, refused) in EXPECTED.items():
        entry = permissions.get(user_of(definitions, role))
        if entry is None:
            problems.append(f"no permissions for the {role} role")
            continue
        pattern = str(entry.get(operation, ""))
        if not (pattern.startswith("^") and pattern.endswith("$")):
            problems.append(f"{role} {operation} pattern {pattern!r} is not anchored (RabbitMQ searches)")
        missing = [name for name in allowed() if not matches(pattern, name)]
        extra = [name for name in refused() if matches(pattern, name)]
        if missing:
            problems.append(f"{role} cannot {operation} {missing[:4]} ({pattern!r})")
        if extra:
            problems.append(f"{role} may {operation} {extra[:4]}, which it does not need ({pattern!r})")
    topics = {
        (entry["user"], entry["exchange"]): entry for entry in definitions.get("topic_permissions") or []
    }
    events = topology.events_exchange(PREFIX)
    for (role, operation), (allowed_keys, refused_keys) in TOPIC_EXPECTED.items():
        topic = topics.get((user_of(definitions, role), events))
        if topic is None:
            problems.append(f"no topic permissions of the {role} role on {events}")
            continue
        pattern = str(topic.get(operation, ""))
        missing = [key for key in allowed_keys if not matches(pattern, key)]
        extra = [key for key in refused_keys if matches(pattern, key)]
        if missing or extra:
            problems.append(
                f"{role} topic {operation} on {events} {pattern!r}: refuses {missing}, allows {extra}"
            )
    return problems


def conf_values(path: Path) -> dict[str, str]:
    """`key = value` lines of a rabbitmq.conf (new-style) file, comments left out."""
    values = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            key, separator, value = line.partition("=")
            assert separator, f"{path.name}: not a key = value line: {line!r}"
            values[key.strip()] = value.strip()
    return values


# ---------------------------------------------------------------- tests on the real files


@pytest.fixture(scope="module")
def definitions() -> Definitions:
    loaded: Definitions = json.loads(DEFINITIONS.read_text(encoding="utf-8"))
    return loaded


def test_definitions_grant_each_role_what_it_needs_and_no_more(definitions: Definitions) -> None:
    problems = definitions_problems(definitions)
    assert not problems, "\n".join(problems)


def test_max_message_size_is_the_topologys() -> None:
    values = conf_values(RABBITMQ / "20-maze.conf")
    assert int(values["max_message_size"]) == topology.BROKER_MAX_MESSAGE_BYTES
    assert topology.BROKER_MAX_MESSAGE_BYTES >= 4 * topology.MAX_STATE_BYTES


def test_compose_broker_reads_the_limits() -> None:
    (compose,) = yaml.safe_load_all((DEPLOY / "docker-compose.yml").read_text(encoding="utf-8"))
    mounts = [str(volume) for volume in compose["services"]["rabbitmq"]["volumes"]]
    assert "./rabbitmq/20-maze.conf:/etc/rabbitmq/conf.d/20-maze.conf:ro" in mounts


def test_kubernetes_secret_uses_the_defined_users_and_vhost(definitions: Definitions) -> None:
    documents = yaml.safe_load_all((DEPLOY / "k8s" / "secret.yaml").read_text(encoding="utf-8"))
    (secret,) = [doc for doc in documents if doc and doc.get("kind") == "Secret"]
    values = secret["stringData"]
    for key, role in (("MAZE_AMQP_URL", "worker"), ("RABBITMQ_MANAGEMENT_URL", "monitor")):
        url = urlsplit(values[key])
        assert url.username == user_of(definitions, role), f"{key}: user {url.username}"
        assert unquote(url.path.lstrip("/")) == vhost_of(definitions), f"{key}: vhost {url.path}"
        assert url.scheme in ("amqps", "https"), f"{key}: {url.scheme}, not TLS"


# ---------------------------------------------------------------- the checks can fail


def _permissions(definitions: Definitions, role: str) -> dict[str, Any]:
    return next(p for p in definitions["permissions"] if p["user"] == user_of(definitions, role))


def _topic(definitions: Definitions, role: str) -> dict[str, Any]:
    return next(p for p in definitions["topic_permissions"] if p["user"] == user_of(definitions, role))


MUTATIONS: dict[str, tuple[Callable[[Definitions], object], str]] = {
    "producer reads everything": (
        lambda d: _permissions(d, "producer").update(read=".*"),
        "producer may read",
    ),
    "producer writes the default exchange": (
        lambda d: _permissions(d, "producer").update(write="^(maze\\.states|amq\\.default)$"),
        "producer may write ['amq.default']",
    ),
    "producer pattern unanchored": (
        lambda d: _permissions(d, "producer").update(write="maze\\.states"),
        "not anchored",
    ),
    "submitter consumes jobs": (
        lambda d: _permissions(d, "submitter").update(read="^(maze\\..*|amq\\.gen-.*)$"),
        "submitter may read",
    ),
    "worker cannot reply": (
        lambda d: _permissions(d, "worker").update(write="^(maze\\..*|amq\\.gen-.*)$"),
        "worker cannot write",
    ),
    "worker misses the heartbeat queue": (
        lambda d: _permissions(d, "worker").update(
            configure="^(maze\\.(states|dead|jobs|handoff).*|amq\\.gen-.*)$"
        ),
        "worker cannot configure",
    ),
    "submitter binds to every event": (
        lambda d: _topic(d, "submitter").update(read=".*"),
        "submitter topic read",
    ),
    "worker publishes any event": (lambda d: _topic(d, "worker").update(write=".*"), "worker topic write"),
    "committed password": (lambda d: d["users"][0].update(password_hash="abc"), "has a password hash"),
    "producer is an administrator": (
        lambda d: next(u for u in d["users"] if u["name"].endswith("-producer")).update(
            tags=["administrator"]
        ),
        "only the monitor user",
    ),
    "permission on another vhost": (lambda d: _permissions(d, "monitor").update(vhost="/"), "on vhost '/'"),
    "monitor user gone": (
        lambda d: d.update(users=[u for u in d["users"] if not u["name"].endswith("-monitor")]),
        "no user maze-monitor",
    ),
}


@pytest.mark.parametrize("mutation", sorted(MUTATIONS))
def test_checks_catch(mutation: str, definitions: Definitions) -> None:
    edit, expected = MUTATIONS[mutation]
    edited = copy.deepcopy(definitions)
    edit(edited)
    problems = definitions_problems(edited)
    assert any(expected in problem for problem in problems), f"{mutation!r} not caught; problems: {problems}"
