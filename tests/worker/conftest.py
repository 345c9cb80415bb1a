"""Broker fixtures for the worker's integration tests.

``amqp_url`` is a real RabbitMQ with the consistent-hash exchange, found or provisioned as ``make demo`` does
(worker/broker/provision.py): ``$MAZE_AMQP_URL`` when set (used as it is), else the local broker, started and
its plugin enabled where RabbitMQ is installed, else a throwaway container where a Docker engine answers.
Without any, the broker tests are skipped with the reason, or, with ``MAZE_REQUIRE_BROKER`` set (``make test``
and CI set it), the run stops at the first of them with that one message. ``prefix`` gives each test its own
topology prefix and deletes what was declared under it afterwards.
"""

import contextlib
import os
import uuid
import warnings
from collections.abc import Iterator

import pika
import pika.exceptions
import pytest

from worker.broker import probe, provision
from worker.launcher import free_port
from worker.wire import topology

REQUIRE_BROKER_ENV = "MAZE_REQUIRE_BROKER"
"""When set (make test and CI set it), no usable broker stops the run instead of skipping the broker tests."""


def connect(url: str) -> pika.BlockingConnection:
    """A blocking connection with short timeouts, for test set-up and tear-down."""
    return probe.connect(url)


@pytest.fixture(scope="session")
def amqp_url() -> Iterator[str]:
    """URL of a usable RabbitMQ (see the module docstring)."""
    with contextlib.ExitStack() as stack:
        try:
            url = stack.enter_context(provision.broker(os.environ.get(topology.AMQP_URL_ENV) or None))
        except provision.BrokerUnavailable as err:
            if os.environ.get(REQUIRE_BROKER_ENV):
                pytest.exit(f"the broker tests need RabbitMQ ({REQUIRE_BROKER_ENV} is set).\n{err}",
                            returncode=1)
            pytest.skip(str(err))
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
