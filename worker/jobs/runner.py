"""Supervising one job's child process: start it, read its progress, stop it (cancel, time limit), collect
its outcome.

The child runs in a session of its own, so stopping it reaches the processes it started too (the parallel
rollout runner's workers): SIGTERM to the whole group, then SIGKILL after the grace period. Nothing here
blocks for long: the job service calls ``poll`` from its loop between broker round trips.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from worker.jobs.child import BROKER_ENV, EXIT_CONFIG_ERROR, EXIT_OK, OUTCOME_FILE, broker_environment
from worker.jobs.datasets import stream_override
from worker.jobs.evaluation_spec import evaluation_plain
from worker.jobs.records import LOG_FILE, PROGRESS_FILE, SPEC_FILE, read_json, write_json_atomic
from worker.jobs.rules import STREAM
from worker.jobs.schema import JobMessage
from worker.settings import BrokerSettings, WorkerSettings

logger = logging.getLogger(__name__)

ARTIFACT_ROOT_ENV = "MAZE_ARTIFACT_ROOT"


@dataclass(frozen=True)
class ChildSpec:
    """What the child runs: a job kind with a config name and overrides (an evaluate job: its evaluation),
    into ``output_dir``."""

    kind: str
    config: str
    overrides: Sequence[str]
    output_dir: Path
    torch_threads: int = 1
    artifact_root: Path | None = None
    """The job worker's artifact root, given to the child as ``MAZE_ARTIFACT_ROOT``: the config tree's
    default for it (``policy=published_policy`` reads published policies there), whatever the worker's own
    environment says."""
    evaluation: dict[str, Any] | None = None
    """An evaluate job's vetted ``evaluation`` map."""
    broker: BrokerSettings | None = None
    """For an evaluate job of a ``stream:`` dataset: the settings its child reads the stream with, given to
    it in the environment (``BROKER_ENV``) and never written to the job directory."""


def child_spec(job: JobMessage, output_dir: Path, settings: WorkerSettings, artifact_root: Path) -> ChildSpec:
    """The ChildSpec of the vetted ``job`` for a worker of ``settings``."""
    evaluation = job.evaluation
    reads_stream = evaluation.dataset.startswith(STREAM) if evaluation is not None \
        else stream_override(job.overrides) is not None
    return ChildSpec(str(job.kind), job.config, job.overrides, output_dir, settings.torch_threads,
                     artifact_root, None if evaluation is None else evaluation_plain(evaluation),
                     settings.broker if reads_stream else None)


@dataclass(frozen=True)
class Outcome:
    """How a child ended."""

    exit_code: int | None
    """The exit status; negative: killed by that signal (Popen's convention); None: never started."""
    summary: dict[str, Any] = field(default_factory=dict)
    error: dict[str, str] | None = None
    stopped: str | None = None
    """Why the supervisor stopped it (``cancelled``, ``time_limit``, ``shutdown``); None: it ended itself."""

    @property
    def succeeded(self) -> bool:
        return self.exit_code == EXIT_OK and self.stopped is None and self.error is None

    @property
    def config_error(self) -> bool:
        return self.exit_code == EXIT_CONFIG_ERROR and self.stopped is None


def resumable_epoch(spec: ChildSpec) -> int | None:
    """The epochs an earlier attempt of a training job checkpointed in its output, when it may go on from
    there (None: start afresh; a rollout always does, and so does a training with an unreadable or final
    checkpoint)."""
    from maze_engine.training.checkpoint import CHECKPOINT_FILE, CheckpointError, read_checkpoint
    from maze_engine.training.summary import INTERRUPTED

    if spec.kind != "train" or not (spec.output_dir / CHECKPOINT_FILE).is_file():
        return None

    try:
        checkpoint = read_checkpoint(spec.output_dir)
    except CheckpointError as err:
        logger.warning("starting the job afresh: %s", err)
        return None
    # Written every epoch while training runs (no reason yet), and once more when a stop or a kill of the
    # job worker interrupts it; a run that ended for good starts afresh.
    return checkpoint.epoch if checkpoint.stop_reason in (None, INTERRUPTED) else None


class ChildProcess:
    """One running job child; see the module docstring."""

    def __init__(self, job_dir: Path, spec: ChildSpec, python: str = sys.executable,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.job_dir = job_dir
        self.spec = spec
        self.clock = clock
        for stale in (OUTCOME_FILE, PROGRESS_FILE):  # from an earlier attempt
            (job_dir / stale).unlink(missing_ok=True)
        self.resumed_from_epoch = resumable_epoch(spec)
        """The epoch an earlier attempt's checkpoint lets a training go on from, else None."""
        if self.resumed_from_epoch is None:
            shutil.rmtree(spec.output_dir, ignore_errors=True)  # an earlier attempt's partial output
        root = None if spec.artifact_root is None else str(Path(spec.artifact_root).resolve())
        write_json_atomic(job_dir / SPEC_FILE, {"kind": spec.kind, "config": spec.config,
                                                "overrides": list(spec.overrides),
                                                "output_dir": str(spec.output_dir),
                                                "torch_threads": spec.torch_threads,
                                                "evaluation": spec.evaluation, "artifact_root": root})
        self._log = open(job_dir / LOG_FILE, "ab")  # noqa: SIM115 - closed in _finish
        env = {key: value for key, value in os.environ.items() if key != BROKER_ENV}
        env["PYTHONUNBUFFERED"] = "1"
        if root is not None:
            env[ARTIFACT_ROOT_ENV] = root
        if spec.broker is not None:
            env[BROKER_ENV] = broker_environment(spec.broker)
        self.process = subprocess.Popen([python, "-m", "worker.jobs.child", str(job_dir)], stdout=self._log,
                                        stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                                        start_new_session=True)
        self.started = clock()
        self._progress_offset = 0
        self._stop_reason: str | None = None
        self._term_sent: float | None = None
        self._outcome: Outcome | None = None

    @property
    def pid(self) -> int:
        return self.process.pid

    def elapsed(self) -> float:
        return self.clock() - self.started

    def read_progress(self) -> list[dict[str, Any]]:
        """Progress lines appended since the last call (complete lines only)."""
        path = self.job_dir / PROGRESS_FILE
        try:
            with open(path, "rb") as file:
                file.seek(self._progress_offset)
                data = file.read()
        except OSError:
            return []
        end = data.rfind(b"\n") + 1
        self._progress_offset += end
        lines = []
        for raw in data[:end].splitlines():
            try:
                value = json.loads(raw)
            except ValueError:
                continue
            if isinstance(value, dict):
                lines.append(value)
        return lines

    def stop(self, reason: str, grace_s: float) -> None:
        """Ask the child (and its process group) to stop; ``poll`` escalates to SIGKILL after ``grace_s``."""
        if self._stop_reason is None:
            self._stop_reason = reason
            self._grace_s = grace_s
            self._term_sent = self.clock()
            self._signal(signal.SIGTERM)

    def _signal(self, signum: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signum)

    def poll(self) -> Outcome | None:
        """None while the child runs; its Outcome once it (and, after a stop, its group) has ended."""
        if self._outcome is not None:
            return self._outcome
        code = self.process.poll()
        if code is None:
            if self._term_sent is not None and self.clock() - self._term_sent >= self._grace_s:
                self._signal(signal.SIGKILL)
            return None
        if self._stop_reason is not None:
            self._signal(signal.SIGKILL)  # whatever of its group is left
        return self._finish(code)

    def wait(self, timeout: float) -> Outcome | None:
        deadline = self.clock() + timeout
        while self.clock() < deadline:
            outcome = self.poll()
            if outcome is not None:
                return outcome
            time.sleep(0.05)
        return self.poll()

    def _finish(self, code: int) -> Outcome:
        self._log.close()
        reported = read_json(self.job_dir / OUTCOME_FILE) if self._stop_reason is None else None
        if isinstance(reported, dict) and reported.get("exit") == code:
            error = reported.get("error")
            self._outcome = Outcome(code, dict(reported.get("summary") or {}),
                                    error if isinstance(error, dict) else None)
        else:
            message = (f"the job's process was killed by signal {_signal_name(-code)}" if code < 0
                       else f"the job's process exited with status {code} without a result")
            self._outcome = Outcome(code, {}, {"code": "crashed", "message": message + f" (see {LOG_FILE})"},
                                    stopped=self._stop_reason)
        return self._outcome

    def log_tail(self, limit: int = 2000) -> str:
        """The end of the child's output, for error messages."""
        try:
            data = (self.job_dir / LOG_FILE).read_bytes()
        except OSError:
            return ""
        return data[-limit:].decode("utf-8", "replace")


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return str(number)
