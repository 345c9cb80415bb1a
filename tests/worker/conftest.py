"""Broker fixtures for the worker's integration tests.

``amqp_url`` finds a real RabbitMQ: ``$MAZE_AMQP_URL`` when set, else a throwaway testcontainers broker when a
Docker engine answers, else the local broker at 127.0.0.1:5672. Tests are skipped, with the reason, when none
is reachable or it lacks the consistent-hash exchange plugin (they fail instead when ``MAZE_REQUIRE_BROKER``
is set, as in CI). ``prefix`` gives each test its own topology
prefix and deletes what was declared under it afterwards.
"""

import contextlib
import os
import uuid
import warnings
from collections.abc import Iterator

import pika
import pika.exceptions
import pytest

from worker.broker import probe
from worker.launcher import free_port
from worker.wire import topology

LOCAL_AMQP_URL = "amqp://guest:guest@127.0.0.1:5672/%2F"
CONTAINER_IMAGE = "rabbitmq:3.13"
PLUGIN = probe.PLUGIN
REQUIRE_BROKER_ENV = "MAZE_REQUIRE_BROKER"
"""When set (CI sets it), a missing broker or plugin fails the integration tests instead of skipping them."""
START_HINT = ("set MAZE_AMQP_URL, start Docker (tests then start a RabbitMQ container), or start a local "
              "broker: docker compose -f deploy/docker-compose.yml up rabbitmq")


def connect(url: str) -> pika.BlockingConnection:
    """A blocking connection with short timeouts, for test set-up and tear-down."""
    return probe.connect(url)


def _docker_answers() -> bool:
    try:
        import docker  # installed with testcontainers

        client = docker.from_env(timeout=3)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except Exception:  # no package, no socket, no permission: all mean "no Docker engine for us"
        return False


@contextlib.contextmanager
def _container_broker() -> Iterator[str]:
    from testcontainers.community.rabbitmq import RabbitMqContainer

    with RabbitMqContainer(CONTAINER_IMAGE) as container:
        code, output = container.exec(["rabbitmq-plugins", "enable", "--online", PLUGIN])
        if code != 0:
            raise RuntimeError(f"enabling {PLUGIN} in the test container failed: {output!r}")
        host = container.get_container_host_ip()
        port = container.get_exposed_port(container.port)
        yield f"amqp://{container.username}:{container.password}@{host}:{port}/%2F"


def _check_broker(url: str) -> str | None:
    """None if ``url`` reaches a usable broker, else the reason why not (and how to get one)."""
    problem = probe.broker_problem(url)
    if problem is None:
        return None
    return f"{problem}; {START_HINT}" if problem.kind == probe.BrokerProblem.UNREACHABLE else str(problem)


@pytest.fixture(scope="session")
def amqp_url() -> Iterator[str]:
    """URL of a reachable RabbitMQ with the consistent-hash exchange plugin (skips the test otherwise)."""
    with contextlib.ExitStack() as stack:
        url = os.environ.get(topology.AMQP_URL_ENV)
        if not url:
            url = stack.enter_context(_container_broker()) if _docker_answers() else LOCAL_AMQP_URL
        reason = _check_broker(url)
        if reason is not None:
            if os.environ.get(REQUIRE_BROKER_ENV):
                pytest.fail(f"{REQUIRE_BROKER_ENV} is set and no usable broker was found: {reason}")
            pytest.skip(reason)
        yield url


@pytest.fixture
def amqp_connection(amqp_url: str) -> Iterator[pika.BlockingConnection]:
    """A fresh blocking connection for the test, closed afterwards."""
    connection = connect(amqp_url)
    yield connection
    with contextlib.suppress(pika.exceptions.AMQPError):
        connection.close()


class BrokerCleanup:
    """Names of extra queues and exchanges a test declared, deleted with the test's prefix."""

    def __init__(self) -> None:
        self.queues: list[str] = []
        self.exchanges: list[str] = []

    def queue(self, name: str) -> str:
        self.queues.append(name)
        return name

    def exchange(self, name: str) -> str:
        self.exchanges.append(name)
        return name


@pytest.fixture
def broker_cleanup() -> BrokerCleanup:
    """Register extra names here to have them deleted after the test (the ``prefix`` fixture does it)."""
    return BrokerCleanup()


def delete_prefix(url: str, prefix: str, extra: BrokerCleanup | None = None) -> None:
    """Delete every queue and exchange the worker's topology (and ``extra``) may have under ``prefix``."""
    extra = extra or BrokerCleanup()
    probe.delete_prefix(url, prefix, tuple(extra.queues), tuple(extra.exchanges))


@pytest.fixture
def prefix(amqp_url: str, broker_cleanup: BrokerCleanup) -> Iterator[str]:
    """A topology prefix of the test's own; its exchanges and queues are deleted after the test."""
    name = f"test-{uuid.uuid4().hex[:10]}"
    yield name
    try:
        delete_prefix(amqp_url, name, broker_cleanup)
    except pika.exceptions.AMQPError as err:  # a broken broker must not hide the test's own result
        warnings.warn(f"could not delete the test topology {name}.*: {err!r}", stacklevel=1)


@pytest.fixture
def unused_port() -> int:
    """A local TCP port nothing listens on (free when asked)."""
    return free_port()
