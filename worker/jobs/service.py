"""The job worker: take one job at a time from the job queues, run it in a child process, answer it.

One thread and one connection (pika's BlockingConnection is not thread-safe). The loop takes a job with
``basic.get`` (the queues of its kinds in turn), checks it (``JobIntake``), moves it under this worker's
*lease* (a copy in ``<prefix>.jobs.lease.<worker_id>`` that expires back to the job queue unless renewed)
and acknowledges the original, then supervises the child: progress becomes events, control messages
cancel, the time limit stops it, and the lease is renewed every third of its TTL. When the child ends the
result is stored in the artifact root, published to the job's ``reply_to`` and the lease copy is removed.
A worker that dies stops renewing: its lease copy expires and the broker puts the job back on its queue for
another worker (docs/jobs.md, "At least once").
"""

from __future__ import annotations

import logging
import os
import re
import secrets
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from worker.broker.agent_transport import BrokerConnectionLost, BrokerUnreachable
from worker.broker.job_transport import JobDelivery, JobTransport, headers_without_death
from worker.jobs import split
from worker.jobs.answers import JobAnswers
from worker.jobs.codec import encode_job
from worker.jobs.control import DEFAULT_CANCEL_REASON, JobControl, cancellation_of
from worker.jobs.guard import JobGuard
from worker.jobs.intake import Accepted, JobIntake, Rejected
from worker.jobs.lease import JobLease
from worker.jobs.merge import ChunkCompletion
from worker.jobs.metrics import JobMetrics
from worker.jobs.publishing import publish_trained_policy
from worker.jobs.records import JobRecords
from worker.jobs.runner import ChildProcess, Outcome, child_spec
from worker.jobs.schema import (
    JobError,
    JobErrorCode,
    JobEvent,
    JobKind,
    JobMessage,
    JobResult,
    JobStatus,
)
from worker.settings import JobSettings, WorkerSettings
from worker.wire import declarations, topology
from worker.wire.topology import JOB_ATTEMPTS_HEADER, JOB_KIND_HEADER, DeadReason, mask_url

logger = logging.getLogger(__name__)

STOP_REASON_SHUTDOWN = "shutdown"
STOP_REASON_LEASE = "lease_lost"


def make_worker_id() -> str:
    """``<host>-<pid>-<random>``, usable in queue names (at most 64 letters, digits, '_' and '-')."""
    host = re.sub(r"[^A-Za-z0-9_-]", "-", socket.gethostname())[:40].strip("-") or "host"
    return f"{host}-{os.getpid()}-{secrets.token_hex(3)}"


@dataclass
class RunningJob:
    """The job this worker runs now."""

    job: JobMessage
    delivery: JobDelivery
    """The job message as the lease holds it (with the attempts header)."""
    attempts: int
    child: ChildProcess
    lease: JobLease


class JobService:
    """Serves the job queues of ``settings.broker.prefix`` until ``stop()``; see the module docstring."""

    def __init__(self, settings: WorkerSettings, metrics: JobMetrics | None = None,
                 health: Any = None, transport: JobTransport | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.settings = settings
        self.jobs: JobSettings = settings.jobs
        self.prefix = settings.broker.prefix
        self.worker_id = make_worker_id()
        self.records = JobRecords(settings.artifact_root)
        self.metrics = metrics or JobMetrics()
        self.health = health
        self.transport = transport or JobTransport(settings.broker,
                                                   f"maze-job-worker {self.prefix} {self.worker_id}")
        self.intake = JobIntake(self.records, JobGuard(settings.artifact_root, self.jobs.allowed_targets))
        self.control = JobControl(self.records, self._stop_cancelled)
        self.answers = JobAnswers(self.transport, self.records, self.metrics, self.prefix, self.worker_id)
        self.chunks = ChunkCompletion(self.records, self.answers, self.transport, self.prefix)
        self.clock = clock
        self.lease_queue = topology.lease_queue(self.prefix, self.worker_id)
        self.queues = [topology.jobs_queue(self.prefix, kind) for kind in self.jobs.kinds]
        self.running: RunningJob | None = None
        self.consuming = threading.Event()
        """Set while the worker takes jobs (tests and the health endpoint wait on it)."""
        self._stop = threading.Event()
        self._next_queue = 0

    # -- control -----------------------------------------------------------------------------------------

    def stop(self) -> None:
        """Stop taking jobs; a running job is stopped and put back on its queue. Safe from any thread."""
        self._stop.set()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    # -- the loop ----------------------------------------------------------------------------------------

    def run(self) -> None:
        """Serve until ``stop()`` and the running job is put back. Raises AccessRefused, TopologyConflict."""
        from worker.broker.backoff import Backoff

        reconnect = self.settings.reconnect
        backoff = Backoff(reconnect.initial_backoff_s, reconnect.max_backoff_s)
        logger.info("maze-worker jobs serving %s, prefix %r, kinds %s, artifact root %s, worker id %s",
                    mask_url(self.settings.broker.url), self.prefix, ",".join(self.jobs.kinds),
                    self.records.root, self.worker_id)
        try:
            while True:
                if self._stop.is_set() and self.running is None:
                    break
                try:
                    self._open()
                except (BrokerUnreachable, BrokerConnectionLost) as err:
                    delay = backoff.next_delay()
                    logger.warning("cannot reach the broker (%s); retrying in %.1f s", err, delay)
                    self._supervise_offline(delay)
                    continue
                connected_at = self.clock()
                try:
                    self._serve()
                    break
                except BrokerConnectionLost as err:
                    self._lost()
                    if self.clock() - connected_at >= reconnect.healthy_after_s:
                        backoff.reset()
                    delay = backoff.next_delay()
                    logger.warning("connection lost (%s); reconnecting in %.1f s", err, delay)
                    self._supervise_offline(delay)
        finally:
            if self.running is not None:  # only when an unexpected error ends the loop
                self.running.child.stop(STOP_REASON_SHUTDOWN, 0)
            self._lost()

    def _open(self) -> None:
        transport = self.transport
        transport.connect()
        # Every kind's queue is declared, so jobs of a kind this worker does not run can still be submitted.
        transport.declare(declarations.jobs_topology(self.prefix, self.jobs.delivery_limit))
        transport.declare_lease_queue(self.lease_queue,
                                      topology.lease_queue_arguments(self.prefix, self.jobs.lease_ttl_s))
        transport.listen_control(topology.control_exchange(self.prefix))
        if self.running is not None:
            self._reclaim()
        self.consuming.set()
        if self.health is not None:
            self.health.set_healthy(True)
        logger.info("consuming job queues %s (lease queue %s)", ", ".join(self.queues), self.lease_queue)

    def _lost(self) -> None:
        self.consuming.clear()
        if self.health is not None:
            self.health.set_healthy(False)
        self.transport.close()

    def _serve(self) -> None:
        poll = self.jobs.poll_interval_s
        while True:
            if self.running is not None:
                self._supervise(self.transport.wait(0.2))
                continue
            if self._stop.is_set():
                return
            delivery = self._take()
            if delivery is not None:
                self._handle(delivery)
                continue
            self.control.handle(self.transport.wait(poll))

    def _take(self) -> JobDelivery | None:
        for offset in range(len(self.queues)):
            index = (self._next_queue + offset) % len(self.queues)
            delivery = self.transport.get(self.queues[index])
            if delivery is not None:
                self._next_queue = index + 1
                return delivery
        return None

    def _supervise_offline(self, delay: float) -> None:
        """Keep an eye on the running child while the broker is away (it may end or hit its limits)."""
        deadline = self.clock() + delay
        while self.clock() < deadline:
            if self.running is not None:
                running = self.running
                self._check_limits(running)
                if self._stop.is_set():
                    running.child.stop(STOP_REASON_SHUTDOWN, self.jobs.cancel_grace_s)
                if running.lease.lapsed(margin=1.0):
                    running.child.stop(STOP_REASON_LEASE, self.jobs.cancel_grace_s)
            elif self._stop.is_set():
                return
            time.sleep(0.1)

    # -- taking a job ------------------------------------------------------------------------------------

    def _handle(self, delivery: JobDelivery) -> None:
        decision = self.intake.check(delivery, self.jobs.delivery_limit, self.jobs.lease_ttl_s)
        transport = self.transport
        if isinstance(decision, Rejected):
            if decision.result is None and decision.dead_reason is None:
                logger.info("dropping a copy of a job that is split already or runs on another worker")
            if decision.result is not None:
                self.answers.result(delivery.reply_to, delivery.correlation_id, decision.result,
                             store=decision.store)
            if decision.dead_reason is not None:
                self.answers.dead_letter(delivery, decision.dead_reason, decision.field, decision.detail)
            transport.ack(delivery.tag)
            job = decision.job
            if job is not None and job.chunk_of is not None and decision.result is not None \
                    and decision.store:
                # A chunk cancelled while queued, or out of attempts: its split rollout must hear of it.
                self.chunks.chunk_done(job, self.records.result(job.job_id) or decision.result)
            return
        assert isinstance(decision, Accepted)
        job = decision.job
        if decision.split is not None:
            self._split(delivery, job, decision.split)
            return
        self._start(delivery, job, decision.attempts)

    def _split(self, delivery: JobDelivery, job: JobMessage, plan: split.ChunkPlan) -> None:
        """Publish the chunk jobs of a split rollout; whoever finishes the last chunk answers the job."""
        self.records.update_record(job.job_id, kind=str(job.kind), status=str(JobStatus.RUNNING),
                                   reply_to=delivery.reply_to, correlation_id=delivery.correlation_id,
                                   chunks=[chunk.job_id for chunk in plan.jobs], worker=self.worker_id,
                                   started=time.time())
        self.answers.event(job.job_id, JobEvent.ACCEPTED, kind=str(job.kind), chunks=len(plan.jobs))
        queue = topology.jobs_queue(self.prefix, JobKind.ROLLOUT)
        for chunk in plan.jobs:
            self.transport.publish_confirmed("", queue, encode_job(chunk),
                                             headers={JOB_KIND_HEADER: "rollout"})
        self.transport.ack(delivery.tag)
        self.answers.event(job.job_id, JobEvent.STARTED, chunks=len(plan.jobs))
        logger.info("job %s split into %d chunk jobs", job.job_id, len(plan.jobs))

    def _start(self, delivery: JobDelivery, job: JobMessage, attempts: int) -> None:
        headers = headers_without_death(delivery.headers)
        headers.update({JOB_KIND_HEADER: str(job.kind), JOB_ATTEMPTS_HEADER: attempts})
        lease = JobLease(self.transport, self.lease_queue, self.jobs.lease_ttl_s, self.clock)
        delivery = lease.take(delivery, headers)
        job_dir = self.records.job_dir(job.job_id)
        output = self.records.output_dir(job.job_id)
        record_fields: dict[str, Any] = {}
        if job.chunk_of is not None:
            record_fields["parent"] = job.chunk_of.parent
        self.records.update_record(job.job_id, kind=str(job.kind), status=str(JobStatus.RUNNING),
                                   attempts=attempts, worker=self.worker_id, reply_to=delivery.reply_to,
                                   correlation_id=delivery.correlation_id, started=time.time(),
                                   lease_renewed=time.time(), output_dir=str(output), **record_fields)
        self.answers.event(job.job_id, JobEvent.ACCEPTED, kind=str(job.kind), attempt=attempts)
        child = ChildProcess(job_dir, child_spec(job, output, self.settings, self.records.root),
                             clock=self.clock)
        self.running = RunningJob(job, delivery, attempts, child, lease)
        self.metrics.running.set(1)
        self.answers.event(job.job_id, JobEvent.STARTED, attempt=attempts, pid=child.pid,
                           output_dir=str(output), resumed_from_epoch=child.resumed_from_epoch)
        logger.info("job %s (%s) started, attempt %d, pid %d%s", job.job_id, job.kind, attempts, child.pid,
                    "" if child.resumed_from_epoch is None else
                    f", resuming after epoch {child.resumed_from_epoch}")

    # -- supervising -------------------------------------------------------------------------------------

    def _supervise(self, control: list[bytes]) -> None:
        running = self.running
        assert running is not None
        self.control.handle(control)
        for line in running.child.read_progress():
            if line.get("event") == "epoch":
                self.metrics.epochs.inc()
                self.answers.event(running.job.job_id, JobEvent.EPOCH, epoch=line.get("epoch"),
                            epochs=line.get("epochs"), stats=line.get("stats"))
        self._check_limits(running)
        if self._stop.is_set():
            running.child.stop(STOP_REASON_SHUTDOWN, self.jobs.cancel_grace_s)
        outcome = running.child.poll()
        if outcome is None and running.lease.due:
            running.lease.renew(running.delivery)
            self.records.update_record(running.job.job_id, lease_renewed=time.time())
        if outcome is not None:
            self.running = None
            self.metrics.running.set(0)
            self._finish(running, outcome)

    def _check_limits(self, running: RunningJob) -> None:
        limit = running.job.time_limit_s
        if limit is not None and running.child.elapsed() >= limit:
            running.child.stop(JobErrorCode.TIME_LIMIT, self.jobs.cancel_grace_s)
        if cancellation_of(self.records, running.job) is not None:
            running.child.stop(JobStatus.CANCELLED, self.jobs.cancel_grace_s)

    def _reclaim(self) -> None:
        """After a reconnect: renew the lease, or stop the job if the lease may have lapsed meanwhile."""
        running = self.running
        assert running is not None
        if running.lease.lapsed():
            logger.warning("job %s: the lease may have expired while the broker was away (the job is back on "
                           "its queue); stopping this run", running.job.job_id)
            running.child.stop(STOP_REASON_LEASE, self.jobs.cancel_grace_s)
            return
        running.lease.reclaim(running.delivery)

    def _stop_cancelled(self, job_id: str) -> None:
        """Stop the running job when a cancel names it or the split rollout it is a chunk of."""
        running = self.running
        if running is not None and (running.job.job_id == job_id or (
                running.job.chunk_of is not None and running.job.chunk_of.parent == job_id)):
            logger.info("job %s: cancel requested, stopping its process", running.job.job_id)
            running.child.stop(JobStatus.CANCELLED, self.jobs.cancel_grace_s)

    # -- ending a job ------------------------------------------------------------------------------------

    def _finish(self, running: RunningJob, outcome: Outcome) -> None:
        job, delivery = running.job, running.delivery
        output = str(self.records.output_dir(job.job_id))
        if outcome.stopped in (STOP_REASON_SHUTDOWN, STOP_REASON_LEASE):
            if outcome.stopped == STOP_REASON_SHUTDOWN:
                self._requeue(running, running.attempts - 1)
                self.records.update_record(job.job_id, status=str(JobStatus.QUEUED), worker=None)
                logger.info("job %s stopped for the shutdown and put back on its queue", job.job_id)
            # A lapsed lease: the job is back on its queue, maybe running elsewhere, and the record is theirs.
            running.lease.release()
            return
        if outcome.stopped == JobStatus.CANCELLED:
            mark = cancellation_of(self.records, job) or {}
            result = JobResult(job.job_id, str(job.kind), JobStatus.CANCELLED, output,
                               error=JobError("cancelled", str(mark.get("reason") or DEFAULT_CANCEL_REASON)),
                               attempts=running.attempts)
        elif outcome.stopped == JobErrorCode.TIME_LIMIT:
            result = JobResult(job.job_id, str(job.kind), JobStatus.FAILED, output,
                               error=JobError(JobErrorCode.TIME_LIMIT,
                                              f"the job ran longer than its time limit of "
                                              f"{job.time_limit_s:g} s and was stopped"),
                               attempts=running.attempts)
        elif outcome.succeeded:
            result = JobResult(job.job_id, str(job.kind), JobStatus.FINISHED, output, summary=outcome.summary,
                               attempts=running.attempts)
            if job.publish_policy:
                result = publish_trained_policy(job, result, self.records, self.transport, self.prefix)
        elif outcome.config_error:  # a config error, or data an evaluation refuses (code data)
            error = outcome.error or {}
            message = str(error.get("message", ""))
            result = JobResult(job.job_id, str(job.kind), JobStatus.FAILED, output, attempts=running.attempts,
                               error=JobError(str(error.get("code") or JobErrorCode.CONFIG), message))
            field = "evaluation" if job.evaluation is not None else \
                "dataset" if error.get("code") == JobErrorCode.DATA else "overrides"
            self.answers.dead_letter(delivery, DeadReason.BAD_JOB, field, message)
        else:
            error = outcome.error or {"code": JobErrorCode.CRASHED, "message": "the job's process failed"}
            self.records.update_record(job.job_id, last_error=error)
            if running.attempts < self.jobs.delivery_limit:
                logger.warning("job %s attempt %d failed (%s); putting it back on its queue", job.job_id,
                               running.attempts, error.get("message"))
                self.metrics.retries.inc()
                self._requeue(running, running.attempts)
                self.records.update_record(job.job_id, status=str(JobStatus.QUEUED), worker=None)
                running.lease.release()
                return
            message = (f"failed on all {running.attempts} attempts (delivery limit "
                       f"{self.jobs.delivery_limit}); last: {error.get('message')}")
            result = JobResult(job.job_id, str(job.kind), JobStatus.FAILED, output,
                               error=JobError(JobErrorCode.CRASHED, message), attempts=running.attempts)
            self.answers.dead_letter(delivery, DeadReason.JOB_FAILED, "job", message)
        self.answers.result(delivery.reply_to, delivery.correlation_id, result)
        running.lease.release()
        if job.chunk_of is not None:
            self.chunks.chunk_done(job, result)

    def _requeue(self, running: RunningJob, attempts: int) -> None:
        delivery = running.delivery
        headers = dict(delivery.headers)
        headers[JOB_ATTEMPTS_HEADER] = attempts
        queue = topology.jobs_queue(self.prefix, running.job.kind)
        self.transport.publish_confirmed("", queue, delivery.body,
                                         headers=headers, reply_to=delivery.reply_to,
                                         correlation_id=delivery.correlation_id)
