"""Start ``maze-worker`` as a child process and wait until it serves: for the demo, the tests and benchmarks.

Readiness is the worker's own health endpoint (``/healthz`` answers 200 once it consumes), not a log line:
the launcher gives the child a free local metrics port unless the overrides name one. Log lines are read in
the background (a full pipe would block the child), kept, and optionally echoed with a tag.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Self

from worker.wire.topology import AMQP_URL_ENV

ROOT = Path(__file__).resolve().parent.parent


class WorkerDidNotStart(RuntimeError):
    """The child exited or did not become healthy in time; the message holds its log."""


def free_port() -> int:
    """A local TCP port nothing listens on (free when asked)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _metrics_port(overrides: Sequence[str]) -> int | None:
    for item in reversed(overrides):
        key, _, value = item.partition("=")
        if key.lstrip("+") == "metrics.port" and value.isdigit():
            return int(value)
    return None


class WorkerProcess:
    """A ``maze-worker`` child process; ``output`` collects its log lines."""

    def __init__(self, process: subprocess.Popen[str], port: int, echo: str | None) -> None:
        self.process = process
        self.port = port
        """The metrics and health port of the child."""
        self.output: list[str] = []
        self._echo = echo
        threading.Thread(target=self._read, name="worker-log", daemon=True).start()

    @classmethod
    def start(cls, amqp_url: str, overrides: Sequence[str] = (), *, env: Mapping[str, str] | None = None,
              echo: str | None = None, timeout: float | None = 90.0) -> Self:
        """Start ``maze-worker overrides`` against ``amqp_url``; returns once ``/healthz`` answers 200
        (``timeout=None``: at once, see ``wait_healthy``). ``echo`` tags the lines printed to stdout."""
        overrides = list(overrides)
        port = _metrics_port(overrides)
        if port is None:
            port = free_port()
            overrides += [f"metrics.port={port}", "metrics.host=127.0.0.1"]
        process = subprocess.Popen(
            [sys.executable, "-m", "worker.cli", *overrides], cwd=ROOT,
            env={**os.environ, AMQP_URL_ENV: amqp_url, "PYTHONUNBUFFERED": "1", **(env or {})},
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        worker = cls(process, port, echo)
        if timeout is not None:
            worker.wait_healthy(timeout)
        return worker

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.output.append(line)
            if self._echo is not None:
                print(f"[{self._echo}] {line}", end="", flush=True)

    def healthy(self) -> bool:
        """Whether the child's ``/healthz`` answers 200 (it consumes its queues)."""
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/healthz", timeout=1) as response:
                return bool(response.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    def wait_healthy(self, timeout: float = 90.0) -> None:
        """Wait for ``healthy``; raises WorkerDidNotStart (the child killed) when it exits or times out."""
        deadline = time.monotonic() + timeout
        while not self.healthy():
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.kill()
                raise WorkerDidNotStart(f"maze-worker did not start within {timeout:g} s:\n{self.log()}")
            time.sleep(0.1)

    def log(self) -> str:
        return "".join(self.output)

    def owned(self) -> int | None:
        """The shard count of its last "owning N of S shards" line."""
        for line in reversed(self.output):
            found = re.search(r"owning (\d+) of \d+ shards", line)
            if found:
                return int(found.group(1))
        return None

    def terminate(self, timeout: float = 60) -> int:
        """SIGTERM and wait for the exit code (the worker hands its episodes over and exits)."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=timeout)

    def stop(self, timeout: float = 60) -> int:
        """``terminate``, and kill -9 when it does not exit within ``timeout``; the exit code."""
        try:
            return self.terminate(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            return self.process.returncode

    def kill(self) -> None:
        """kill -9 (nothing if it has exited)."""
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(timeout=30)
