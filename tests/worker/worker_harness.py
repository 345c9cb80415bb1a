"""Test helpers for the worker: a policy whose action is a known function of the state, an in-thread service
runner with a stop hook, a subprocess worker, a raw producer that can send anything (malformed bodies
included), rabbitmqctl and a polling wait. job_harness, policy_harness and cluster_harness build on these.

Imported by the worker tests through their own folder on ``sys.path`` (pytest runs with importlib mode).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Generic, Protocol, TypeVar

import numpy as np
import pytest
from gymnasium import spaces

from maze_engine.core.actor_id import ActorID
from maze_engine.policies.policy import StructuredPolicy
from worker.launcher import WorkerProcess
from worker.serving.factory import build_factory
from worker.serving.service import WorkerService
from worker.settings import (
    BrokerSettings,
    ClusterSettings,
    EpisodeSettings,
    ReconnectSettings,
    WorkerSettings,
)

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests"))
from support.raw_producer import Producer  # noqa: E402

__all__ = ["Producer"]  # the raw producer lives in tests/support; imported from here by the tests
CARTPOLE = {"_target_": "maze_engine.make_gym_maze_env", "name": "CartPole-v1"}


class SignPolicy(StructuredPolicy):
    """Action 1 when the first observation value is >= 0, else 0: checkable per episode from the state."""

    def __init__(self, action_spaces_dict: dict[Any, spaces.Dict] | None = None,
                 fail_above: float = 1e9) -> None:
        self.fail_above = fail_above
        self.batch_sizes: list[int] = []

    @staticmethod
    def expected(state: Sequence[float]) -> int:
        return 1 if state[0] >= 0 else 0

    def compute_action(self, observation: dict[str, Any], actor_id: ActorID | None = None,
                       deterministic: bool = False) -> dict[str, Any]:
        value = float(observation["observation"][0])
        if value > self.fail_above:
            raise RuntimeError(f"policy failure on {value}")
        return {"action": np.int64(1 if value >= 0 else 0)}

    def compute_actions(self, observations: Sequence[dict[str, Any]], actor_id: ActorID | None = None,
                        deterministic: bool = False) -> list[dict[str, Any]]:
        self.batch_sizes.append(len(observations))
        return [self.compute_action(observation, actor_id, deterministic) for observation in observations]


def state(first: float, rng: np.random.Generator | None = None) -> list[float]:
    """A CartPole state whose first value is ``first`` (the others small noise)."""
    rest = (rng or np.random.default_rng()).normal(size=3) * 0.05
    return [float(first), *map(float, rest)]


def settings_for(amqp_url: str, prefix: str, shards: int = 4, **episodes: Any) -> WorkerSettings:
    """Worker settings for tests: few shards, fast reconnects and heartbeats, no metrics port unless asked."""
    return WorkerSettings(broker=BrokerSettings(url=amqp_url, prefix=prefix, shards=shards, prefetch=256),
                          episodes=replace(EpisodeSettings(), **episodes),
                          reconnect=ReconnectSettings(initial_backoff_s=0.2, max_backoff_s=1.0,
                                                      healthy_after_s=5.0),
                          cluster=ClusterSettings(heartbeat_interval_s=0.2, liveness_timeout_s=2.0),
                          stats_interval_s=0)


class Service(Protocol):
    """What ``running_service`` runs: a worker or job service with a blocking ``run`` and a stop hook."""

    consuming: threading.Event

    def run(self) -> None: ...

    def stop(self) -> None: ...


S = TypeVar("S", bound=Service)
W = TypeVar("W", bound=WorkerProcess)


@dataclass
class InProcessWorker(Generic[S]):
    """A service running in a thread; ``stop()`` is the stop hook a signal would pull."""

    service: S
    thread: threading.Thread
    errors: list[BaseException] = field(default_factory=list)
    what: str = "the worker"
    stop_timeout: float = 20.0

    def stop(self) -> None:
        self.service.stop()
        self.thread.join(self.stop_timeout)
        assert not self.thread.is_alive(), f"{self.what} did not stop"


@contextmanager
def running_service(service: S, what: str, start_timeout: float,
                    stop_timeout: float) -> Iterator[InProcessWorker[S]]:
    """Run ``service`` in a thread, wait until it consumes, stop it at the end (also when the start fails)."""
    errors: list[BaseException] = []

    def target() -> None:
        try:
            service.run()
        except BaseException as err:  # noqa: BLE001 - reported by the test
            errors.append(err)

    def started() -> bool:
        assert not errors, f"{what} failed to start: {errors[0]!r}"
        return service.consuming.is_set()

    thread = threading.Thread(target=target, name=f"test: {what}", daemon=True)
    worker = InProcessWorker(service, thread, errors, what, stop_timeout)
    thread.start()
    try:
        wait_until(started, f"{what} did not start consuming", start_timeout, interval=0.02)
        yield worker
    finally:
        if thread.is_alive():
            worker.stop()
    assert not errors, f"{what} raised: {errors[0]!r}"


@contextmanager
def running_worker(settings: WorkerSettings, policy: Any = None, wrappers: Any = None,
                   start_timeout: float = 30.0,
                   **service_kwargs: Any) -> Iterator[InProcessWorker[WorkerService]]:
    """A WorkerService (SignPolicy on CartPole unless told) in a thread, as ``running_service``."""
    factory = build_factory(policy if policy is not None else SignPolicy(), CARTPOLE, wrappers)
    with running_service(WorkerService(settings, factory, **service_kwargs), "the worker", start_timeout,
                         stop_timeout=20.0) as worker:
        yield worker


def wait_until(condition: Callable[[], Any], what: str, timeout: float = 60.0, interval: float = 0.05,
               step: Callable[[], Any] | None = None) -> None:
    """Poll ``condition`` until it is true, calling ``step`` (else sleeping ``interval``) in between; after
    ``timeout`` seconds fails with ``what`` (what went wrong: "the worker did not stop")."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"{what} within {timeout} s"
        if step is None:
            time.sleep(interval)
        else:
            step()


QUICK_HEARTBEAT = ("cluster.heartbeat_interval_s=0.2", "cluster.liveness_timeout_s=2")


def start_worker_process(amqp_url: str, prefix: str, *overrides: str, shards: int,
                         env: dict[str, str] | None = None, timeout: float = 60.0,
                         kind: type[W] = WorkerProcess) -> W:  # type: ignore[assignment]
    """``maze-worker`` on ``prefix`` with fast reconnects and ``overrides``; returns once it is healthy."""
    return kind.start(amqp_url, [f"broker.prefix={prefix}", f"broker.shards={shards}",
                                 "reconnect.initial_backoff_s=0.2", "reconnect.max_backoff_s=1", *overrides],
                      env=env, timeout=timeout)


def start_subprocess_worker(amqp_url: str, prefix: str, *overrides: str, shards: int = 4) -> WorkerProcess:
    """``maze-worker`` (SignPolicy, fast heartbeats) as a child process, for signals and kills."""
    return start_worker_process(amqp_url, prefix, *QUICK_HEARTBEAT, *overrides, shards=shards)


def rabbitmqctl(*args: str, timeout: float = 120) -> str:
    """``rabbitmqctl -q ARGS``; its output (fails on a non-zero exit)."""
    return subprocess.run(["rabbitmqctl", "-q", *args], capture_output=True, text=True, timeout=timeout,
                          check=True).stdout


def connections_named(fragment: str) -> list[str]:
    """Broker connection pids whose client-provided name contains ``fragment``."""
    listed = rabbitmqctl("list_connections", "pid", "client_properties", timeout=60)
    return [line.split("\t", 1)[0] for line in listed.splitlines() if fragment in line]


def close_connections(fragment: str) -> int:
    """Close the broker connections whose client-provided name contains ``fragment``; returns how many."""
    pids = connections_named(fragment)
    for pid in pids:
        rabbitmqctl("close_connection", pid, "test: connection killed", timeout=60)
    return len(pids)


def require_rabbitmqctl(fragment: str) -> None:
    """Skip the test unless rabbitmqctl can see a connection named like ``fragment`` on the tests' broker."""
    if shutil.which("rabbitmqctl") is None:
        pytest.skip("rabbitmqctl is not available to close the worker's connection")
    try:
        found = connections_named(fragment)
    except Exception as err:  # noqa: BLE001 - no permission, another node: the test cannot run here
        pytest.skip(f"rabbitmqctl cannot list connections here ({err})")
    if not found:
        pytest.skip("the broker rabbitmqctl talks to is not the one the tests use")
