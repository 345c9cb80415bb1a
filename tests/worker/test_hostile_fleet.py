"""Hostile peers against a fleet of real ``maze-worker`` processes: poison bodies and heartbeats that once
crashed every worker of a prefix, and credentials that must never show in logs or metrics."""

import secrets
import subprocess
import sys
import urllib.request
import uuid
from pathlib import Path
from urllib.parse import quote, urlsplit, urlunsplit

import msgpack
import pika
import pytest

from worker.wire import topology

sys.path.insert(0, str(Path(__file__).parent))
from worker_harness import Producer, rabbitmqctl, start_subprocess_worker, state  # noqa: E402

pytestmark = pytest.mark.integration


def _nested(depth: int) -> list:
    value: list = []
    for _ in range(depth):
        value = [value]
    return value


def _poison(episode: str, field: str) -> bytes:
    body = {"v": 1, "episode": episode, "seq": 0, "state": state(0.1), "reward": None, "done": False,
            "info": None}
    body[field] = _nested(1000)
    return msgpack.packb(body)


def test_deeply_nested_poison_is_answered_by_two_workers_that_both_survive(amqp_url: str,
                                                                           prefix: str) -> None:
    workers = [start_subprocess_worker(amqp_url, prefix) for _ in range(2)]
    producer = Producer(amqp_url, prefix)
    try:
        fields = ("info", "v", "episode", "seq", "reward", "done", "state", "actor")
        ids = {producer.publish(_poison(f"poison-{index}", field), f"poison-{index}"): field
               for index, field in enumerate(fields * 5)}
        # A hostile heartbeat on the workers' fanout too: it once escaped the heartbeat handler.
        producer.channel.basic_publish(topology.workers_exchange(prefix), "",
                                       msgpack.packb({"v": _nested(1000), "worker": _nested(1000)}))
        replies = producer.wait(list(ids), timeout=60)
        for reply, field in zip(replies, ids.values(), strict=True):
            assert reply["error"]["code"] == "bad_message", reply
            assert reply["error"]["message"].startswith(field), reply
        assert all(worker.process.poll() is None for worker in workers), [w.log() for w in workers]
        assert all(worker.healthy() for worker in workers)
        # Both still serve valid episodes, wherever the hash ring sends them.
        for index in range(8):
            assert producer.call(f"after-{index}", 0, state(0.2))["error"] is None
        assert producer.dead_letter_count() == 0
    finally:
        producer.close()
        for worker in workers:
            assert worker.terminate() == 0, worker.log()


@pytest.fixture
def secret_user(amqp_url: str) -> tuple[str, str]:
    """A broker user with a random password and full rights on the default vhost (deleted afterwards)."""
    user, password = f"maze-test-{uuid.uuid4().hex[:8]}", secrets.token_urlsafe(18)
    rabbitmqctl("add_user", user, password)
    try:
        rabbitmqctl("set_permissions", "-p", "/", user, ".*", ".*", ".*")
        yield user, password
    finally:
        rabbitmqctl("delete_user", user)


def test_the_broker_password_never_shows_in_logs_metrics_or_printed_config(
        amqp_url: str, prefix: str, secret_user: tuple[str, str]) -> None:
    user, password = secret_user
    parts = urlsplit(amqp_url)
    url = urlunsplit(parts._replace(netloc=f"{user}:{quote(password)}@{parts.hostname}:{parts.port or 5672}"))
    pika.BlockingConnection(pika.URLParameters(url)).close()  # the credentials do work
    worker = start_subprocess_worker(url, prefix, "log_level=DEBUG", "stats.interval_s=1")
    try:
        producer = Producer(url, prefix)
        assert producer.call("e", 0, state(0.1))["error"] is None
        producer.close()
        with urllib.request.urlopen(f"http://127.0.0.1:{worker.port}/metrics", timeout=5) as response:
            metrics = response.read().decode()
    finally:
        assert worker.terminate() == 0
    printed = subprocess.run([sys.executable, "-m", "worker.cli", "--cfg", "job", f"broker.url={url}"],
                             capture_output=True, text=True, timeout=120)
    assert user in worker.log() or "****" in worker.log()  # the URL is logged, masked
    for text, where in ((worker.log(), "the log"), (metrics, "/metrics"), (printed.stdout + printed.stderr,
                                                                              "--cfg job")):
        assert password not in text and quote(password) not in text, f"the password shows in {where}"
