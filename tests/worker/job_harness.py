"""Test helpers for job workers: an in-process job service, settings, a job client that records events, raw
job publishing, and a policy that kills its own process (a job that keeps crashing)."""

from __future__ import annotations

import os
import signal
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import msgpack
import pika
from worker_harness import InProcessWorker, running_service, wait_until

from worker.jobs.codec import decode_result
from worker.jobs.schema import JobResult
from worker.jobs.service import JobService
from worker.jobs.submit import JobClient
from worker.settings import BrokerSettings, JobSettings, ReconnectSettings, WorkerSettings
from worker.wire import topology

HERE = Path(__file__).resolve().parent

TINY_TRAINING = ["algorithm=a2c", "algorithm.n_epochs=2", "algorithm.epoch_length=2",
                 "algorithm.n_rollout_steps=16", "algorithm.eval_repeats=1", "runner=dev", "runner.n_envs=2",
                 "runner.n_eval_envs=1"]
"""A training job of a few seconds: 2 epochs of 2 updates on 2 CartPole envs."""
LONG_TRAINING = ["algorithm=a2c", "algorithm.n_epochs=1000", "algorithm.epoch_length=2",
                 "algorithm.n_rollout_steps=16", "algorithm.eval_repeats=1", "algorithm.patience=0",
                 "runner=dev", "runner.n_envs=2", "runner.n_eval_envs=1"]
"""A training job that runs until it is stopped (an epoch every second or so)."""
TINY_ROLLOUT = ["runner=sequential", "runner.max_episode_steps=20"]


def job_settings(amqp_url: str, prefix: str, artifact_root: Path, **jobs: Any) -> WorkerSettings:
    values: dict[str, Any] = {"poll_interval_s": 0.2, "lease_ttl_s": 6.0, "cancel_grace_s": 3.0, **jobs}
    return WorkerSettings(broker=BrokerSettings(url=amqp_url, prefix=prefix),
                          reconnect=ReconnectSettings(initial_backoff_s=0.2, max_backoff_s=1.0,
                                                      healthy_after_s=5.0),
                          jobs=JobSettings(**values), artifact_root=str(artifact_root))


def register_cleanup(cleanup: Any, prefix: str, *services: JobService) -> None:
    """Have the job queues, the return exchange and the services' lease queues deleted after the test."""
    for kind in topology.JOB_KINDS:
        cleanup.queue(topology.jobs_queue(prefix, kind))
    cleanup.exchange(topology.jobs_return_exchange(prefix))
    for service in services:
        cleanup.queue(service.lease_queue)


@contextmanager
def job_worker(settings: WorkerSettings, cleanup: Any = None) -> Iterator[InProcessWorker[JobService]]:
    """A JobService on a thread; waits until it takes jobs, stops it at the end."""
    service = JobService(settings)
    if cleanup is not None:
        register_cleanup(cleanup, settings.broker.prefix, service)
    with running_service(service, "the job worker", start_timeout=60.0, stop_timeout=60.0) as worker:
        yield worker


class RecordingClient(JobClient):
    """A JobClient that keeps every event and result it sees."""

    def __init__(self, url: str, prefix: str) -> None:
        super().__init__(url, prefix)
        self.seen: list[dict[str, Any]] = []
        self.answers: list[JobResult] = []
        """Every result received, duplicates included."""

    def _on_reply(self, channel: Any, method: Any, properties: Any, body: bytes) -> None:
        super()._on_reply(channel, method, properties, body)
        self.answers.append(decode_result(body))

    def answers_of(self, job_id: str) -> list[JobResult]:
        self.pump()
        return [answer for answer in self.answers if answer.job_id == job_id]

    def events_of(self, job_id: str, event: str | None = None) -> list[dict[str, Any]]:
        self.pump()
        return [e for e in self.seen if e["job_id"] == job_id and (event is None or e["event"] == event)]

    def pump(self, seconds: float = 0.05) -> None:
        self.poll(seconds)
        self.seen.extend(self.events)
        self.events = []

    def wait_event(self, job_id: str, event: str, timeout: float = 120.0) -> dict[str, Any]:
        wait_until(lambda: self.events_of(job_id, event), f"no {event} event of {job_id}", timeout)
        return self.events_of(job_id, event)[0]

    def result(self, job_id: str, timeout: float = 180.0) -> JobResult:
        wait_until(lambda: job_id in self.results, f"no result for {job_id}", timeout,
                   step=lambda: self.pump(0.1))
        return self.results.pop(job_id)


def publish_raw(client: JobClient, kind: str, body: bytes, reply_to: str | None = "",
                correlation_id: str | None = None) -> str:
    """Publish any bytes to ``<prefix>.jobs.<kind>``; ``reply_to=""`` means the client's reply queue."""
    correlation_id = correlation_id or uuid.uuid4().hex
    properties = pika.BasicProperties(content_type="application/msgpack", correlation_id=correlation_id,
                                      reply_to=client.reply_queue if reply_to == "" else reply_to)
    client.channel.basic_publish("", topology.jobs_queue(client.prefix, kind), body, properties)
    return correlation_id


def dead_letters(client: JobClient) -> list[tuple[Any, bytes]]:
    taken: list[tuple[Any, bytes]] = []
    while True:
        method, properties, body = client.channel.basic_get(topology.dead_letter_queue(client.prefix),
                                                            auto_ack=True)
        if method is None:
            return taken
        taken.append((properties, body))


def nested_list(depth: int) -> bytes:
    """msgpack of a list nested ``depth`` deep: 1000 decodes fine, but its repr() raises RecursionError."""
    return b"\x91" * depth + b"\x90"


def raw_map(**fields: bytes) -> bytes:
    """A msgpack map of already packed values (to put a ``nested_list`` where the packer would refuse it)."""
    body = bytes([0x80 | len(fields)])
    for key, value in fields.items():
        body += msgpack.packb(key) + value
    return body


def crashing_env() -> dict[str, str]:
    """Environment under which ``job_harness.SelfKillingPolicy`` can be imported by a job's child process."""
    path = os.environ.get("PYTHONPATH", "")
    return {"PYTHONPATH": f"{HERE}{os.pathsep}{path}" if path else str(HERE)}


class SelfKillingPolicy:
    """Kills the process that builds it with SIGKILL: a job that crashes on every attempt, as an OOM kill."""

    def __init__(self, **kwargs: Any) -> None:
        os.kill(os.getpid(), signal.SIGKILL)


def tail(text: Sequence[str], lines: int = 30) -> str:
    return "".join(list(text)[-lines:])
