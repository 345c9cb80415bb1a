"""The job worker: take one job at a time from the job queues, run it in a child process, answer it.

One thread and one connection (pika's BlockingConnection is not thread-safe). The loop takes a job with
``basic.get`` (train and rollout queues in turn), checks it (``JobIntake``), moves it under this worker's
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
from dataclasses import dataclass, field, replace
from typing import Any

from worker import topology
from worker.jobs import merge, split
from worker.jobs.intake import Accepted, JobIntake, Rejected
from worker.jobs.messages import (
    ControlMessage,
    JobDecodeError,
    JobError,
    JobErrorCode,
    JobEvent,
    JobKind,
    JobMessage,
    JobResult,
    JobStatus,
    decode_control,
    encode_control,
    encode_event,
    encode_job,
    encode_result,
)
from worker.jobs.metrics import JobMetrics
from worker.jobs.records import JobRecords
from worker.jobs.runner import ChildProcess, ChildSpec, Outcome
from worker.jobs.transport import JobDelivery, JobTransport, PublishRefused, headers_without_death
from worker.settings import JobSettings, WorkerSettings
from worker.topology import JOB_ATTEMPTS_HEADER, JOB_KIND_HEADER, DeadReason, mask_url
from worker.transport import BrokerUnreachable, ConnectionLost

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
    attempts: int
    child: ChildProcess
    next_renewal: float
    last_renewed: float
    epochs_seen: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


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
        self.intake = JobIntake(self.records)
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
        from worker.service import Backoff

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
                except (BrokerUnreachable, ConnectionLost) as err:
                    delay = backoff.next_delay()
                    logger.warning("cannot reach the broker (%s); retrying in %.1f s", err, delay)
                    self._supervise_offline(delay)
                    continue
                connected_at = self.clock()
                try:
                    self._serve()
                    break
                except ConnectionLost as err:
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
        transport.declare(topology.jobs_topology(self.prefix, self.jobs.delivery_limit))
        transport.declare_lease_queue(self.lease_queue,
                                      topology.lease_queue_arguments(self.prefix, self.jobs.lease_ttl_s))
        transport.listen_control(topology.control_exchange(self.prefix))
        if self.running is not None:
            self._reclaim_lease()
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
            self._control(self.transport.wait(poll))

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
                if self.clock() - running.last_renewed >= self.jobs.lease_ttl_s:
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
                self._answer(delivery.reply_to, delivery.correlation_id, decision.result,
                             store=decision.store)
            if decision.dead_reason is not None:
                self._dead_letter(delivery, decision.dead_reason, decision.field, decision.detail)
            transport.ack(delivery.tag)
            job = decision.job
            if job is not None and job.chunk_of is not None and decision.result is not None \
                    and decision.store:
                # A chunk cancelled while queued, or out of attempts: its split rollout must hear of it.
                self._chunk_done(job, self.records.result(job.job_id) or decision.result)
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
        self._event(job.job_id, JobEvent.ACCEPTED, kind=str(job.kind), chunks=len(plan.jobs))
        queue = topology.jobs_queue(self.prefix, JobKind.ROLLOUT)
        for chunk in plan.jobs:
            self.transport.publish_confirmed("", queue, encode_job(chunk),
                                             headers={JOB_KIND_HEADER: "rollout"})
        self.transport.ack(delivery.tag)
        self._event(job.job_id, JobEvent.STARTED, chunks=len(plan.jobs))
        logger.info("job %s split into %d chunk jobs", job.job_id, len(plan.jobs))

    def _start(self, delivery: JobDelivery, job: JobMessage, attempts: int) -> None:
        headers = headers_without_death(delivery.headers)
        headers.update({JOB_KIND_HEADER: str(job.kind), JOB_ATTEMPTS_HEADER: attempts})
        # The lease copy is confirmed before the original is acknowledged: at every moment one of them holds
        # the job on the broker.
        self.transport.publish_confirmed("", self.lease_queue, delivery.body, headers=headers,
                                         reply_to=delivery.reply_to, correlation_id=delivery.correlation_id)
        self.transport.ack(delivery.tag)
        delivery = replace(delivery, headers=headers)
        job_dir = self.records.job_dir(job.job_id)
        output = self.records.output_dir(job.job_id)
        record_fields: dict[str, Any] = {}
        if job.chunk_of is not None:
            record_fields["parent"] = job.chunk_of.parent
        self.records.update_record(job.job_id, kind=str(job.kind), status=str(JobStatus.RUNNING),
                                   attempts=attempts, worker=self.worker_id, reply_to=delivery.reply_to,
                                   correlation_id=delivery.correlation_id, started=time.time(),
                                   lease_renewed=time.time(), output_dir=str(output), **record_fields)
        self._event(job.job_id, JobEvent.ACCEPTED, kind=str(job.kind), attempt=attempts)
        child = ChildProcess(job_dir, ChildSpec(str(job.kind), job.config, job.overrides, output,
                                                self.settings.torch_threads), clock=self.clock)
        now = self.clock()
        self.running = RunningJob(job, delivery, attempts, child, next_renewal=now + self._renew_every(),
                                  last_renewed=now)
        self.metrics.running.set(1)
        self._event(job.job_id, JobEvent.STARTED, attempt=attempts, pid=child.pid, output_dir=str(output))
        logger.info("job %s (%s) started, attempt %d, pid %d", job.job_id, job.kind, attempts, child.pid)

    def _renew_every(self) -> float:
        return self.jobs.lease_ttl_s / 3

    # -- supervising -------------------------------------------------------------------------------------

    def _supervise(self, control: list[bytes]) -> None:
        running = self.running
        assert running is not None
        self._control(control)
        for line in running.child.read_progress():
            if line.get("event") == "epoch":
                self.metrics.epochs.inc()
                self._event(running.job.job_id, JobEvent.EPOCH, epoch=line.get("epoch"),
                            epochs=line.get("epochs"), stats=line.get("stats"))
        self._check_limits(running)
        if self._stop.is_set():
            running.child.stop(STOP_REASON_SHUTDOWN, self.jobs.cancel_grace_s)
        now = self.clock()
        outcome = running.child.poll()
        if outcome is None and now >= running.next_renewal:
            self._renew(running)
        if outcome is not None:
            self.running = None
            self.metrics.running.set(0)
            self._finish(running, outcome)

    def _check_limits(self, running: RunningJob) -> None:
        limit = running.job.time_limit_s
        if limit is not None and running.child.elapsed() >= limit:
            running.child.stop(JobErrorCode.TIME_LIMIT, self.jobs.cancel_grace_s)
        if self._cancelled(running.job) is not None:
            running.child.stop(JobStatus.CANCELLED, self.jobs.cancel_grace_s)

    def _cancelled(self, job: JobMessage) -> dict[str, Any] | None:
        mark = self.records.cancellation(job.job_id)
        if mark is None and job.chunk_of is not None:
            mark = self.records.cancellation(job.chunk_of.parent)
        return mark

    def _renew(self, running: RunningJob) -> None:
        """Publish a fresh lease copy (confirmed), then drop the old one: never fewer than one copy."""
        delivery = running.delivery
        self.transport.publish_confirmed("", self.lease_queue, delivery.body, headers=delivery.headers,
                                         reply_to=delivery.reply_to, correlation_id=delivery.correlation_id)
        self.transport.take_oldest(self.lease_queue)
        self.records.update_record(running.job.job_id, lease_renewed=time.time())
        now = self.clock()
        running.last_renewed = now
        running.next_renewal = now + self._renew_every()

    def _reclaim_lease(self) -> None:
        """After a reconnect: renew the lease, or stop the job if the lease may have expired meanwhile."""
        running = self.running
        assert running is not None
        if self.clock() - running.last_renewed >= self.jobs.lease_ttl_s * 0.9:
            logger.warning("job %s: the lease may have expired while the broker was away (the job is back on "
                           "its queue); stopping this run", running.job.job_id)
            running.child.stop(STOP_REASON_LEASE, self.jobs.cancel_grace_s)
            return
        self.transport.purge(self.lease_queue)
        self._renew(running)

    def _control(self, messages: list[bytes]) -> None:
        for body in messages:
            try:
                message = decode_control(body)
            except JobDecodeError as err:
                logger.warning("ignoring a control message: %s", err.message)
                continue
            self._on_control(message)

    def _on_control(self, message: ControlMessage) -> None:
        if message.command == "cancel":
            self.records.mark_cancelled(message.job_id, message.reason or "cancelled by request")
            running = self.running
            if running is not None and (running.job.job_id == message.job_id or (
                    running.job.chunk_of is not None and running.job.chunk_of.parent == message.job_id)):
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
            self._release_lease()
            return
        if outcome.stopped == JobStatus.CANCELLED:
            mark = self._cancelled(job) or {}
            result = JobResult(job.job_id, str(job.kind), JobStatus.CANCELLED, output,
                               error=JobError("cancelled", str(mark.get("reason") or "cancelled by request")),
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
                result = self._publish_policy(job, result)
        elif outcome.config_error:
            error = outcome.error or {}
            result = JobResult(job.job_id, str(job.kind), JobStatus.FAILED, output,
                               error=JobError(JobErrorCode.CONFIG, str(error.get("message", ""))),
                               attempts=running.attempts)
            self._dead_letter(delivery, DeadReason.BAD_JOB, "overrides", result.error.message)  # type: ignore
        else:
            error = outcome.error or {"code": JobErrorCode.CRASHED, "message": "the job's process failed"}
            self.records.update_record(job.job_id, last_error=error)
            if running.attempts < self.jobs.delivery_limit:
                logger.warning("job %s attempt %d failed (%s); putting it back on its queue", job.job_id,
                               running.attempts, error.get("message"))
                self.metrics.retries.inc()
                self._requeue(running, running.attempts)
                self.records.update_record(job.job_id, status=str(JobStatus.QUEUED), worker=None)
                self._release_lease()
                return
            message = (f"failed on all {running.attempts} attempts (delivery limit "
                       f"{self.jobs.delivery_limit}); last: {error.get('message')}")
            result = JobResult(job.job_id, str(job.kind), JobStatus.FAILED, output,
                               error=JobError(JobErrorCode.CRASHED, message), attempts=running.attempts)
            self._dead_letter(delivery, DeadReason.JOB_FAILED, "job", message)
        self._answer(delivery.reply_to, delivery.correlation_id, result)
        self._release_lease()
        if job.chunk_of is not None:
            self._chunk_done(job, result)

    def _requeue(self, running: RunningJob, attempts: int) -> None:
        delivery = running.delivery
        headers = dict(delivery.headers)
        headers[JOB_ATTEMPTS_HEADER] = attempts
        queue = topology.jobs_queue(self.prefix, running.job.kind)
        self.transport.publish_confirmed("", queue, delivery.body,
                                         headers=headers, reply_to=delivery.reply_to,
                                         correlation_id=delivery.correlation_id)

    def _release_lease(self) -> None:
        self.transport.purge(self.lease_queue)

    def _publish_policy(self, job: JobMessage, result: JobResult) -> JobResult:
        """Publish the trained policy (``worker.policy_store``) and announce it on ``<prefix>.policies``."""
        assert job.publish_policy is not None
        try:
            from worker import policy_store

            published = policy_store.publish_policy(self.records.root, job.publish_policy, result.output_dir)
        except Exception as err:  # noqa: BLE001 - any failure to publish is reported in the result
            logger.error("job %s: publishing policy %r failed: %s", job.job_id, job.publish_policy, err)
            return replace(result, status=JobStatus.FAILED,
                           error=JobError(JobErrorCode.PUBLISH, f"the training finished but publishing "
                                          f"policy {job.publish_policy!r} failed: {err}"))
        self._announce(policy_store.encode_announcement(published))
        logger.info("job %s published policy %s version %d", job.job_id, published.name, published.version)
        return replace(result, policy={"name": published.name, "version": published.version})

    def _announce(self, body: bytes) -> None:
        # Fanout without a bound queue (no agent worker running) is fine: workers poll on start.
        self.transport.publish(topology.policies_exchange(self.prefix), "", body)

    # -- distributed rollouts ----------------------------------------------------------------------------

    def _chunk_done(self, chunk: JobMessage, result: JobResult) -> None:
        """After a chunk's result is stored: answer the parent if this was the last chunk (or a failure)."""
        assert chunk.chunk_of is not None
        parent = chunk.chunk_of.parent
        record = self.records.record(parent) or {}
        if result.status is not JobStatus.FINISHED:
            self._answer_parent(parent, record, merge.failed_parent(parent, chunk, result, self.records))
            if result.status is JobStatus.FAILED:
                self._cancel_others(parent, f"chunk {chunk.job_id} failed")
            return
        chunk_ids = record.get("chunks") or []
        done = [self.records.result(chunk_id) for chunk_id in chunk_ids]
        finished = sum(1 for item in done if item is not None and item.status is JobStatus.FINISHED)
        self._event(parent, JobEvent.CHUNK, done=finished, chunks=len(chunk_ids), chunk=chunk.job_id)
        if finished == len(chunk_ids) and chunk_ids:
            merged = merge.merge_chunks(parent, [item for item in done if item is not None], self.records)
            if merged is not None:
                self._answer_parent(parent, record, merged)

    def _answer_parent(self, parent: str, record: dict[str, Any], result: JobResult | None) -> None:
        if result is None:
            return
        self._answer(record.get("reply_to"), record.get("correlation_id"), result)

    def _cancel_others(self, parent: str, reason: str) -> None:
        self.records.mark_cancelled(parent, reason)
        body = encode_control(ControlMessage("cancel", parent, reason))
        self.transport.publish(topology.control_exchange(self.prefix), "", body)

    # -- replies, events, dead letters -------------------------------------------------------------------

    def _answer(self, reply_to: str | None, correlation_id: str | None, result: JobResult,
                store: bool = True) -> None:
        """Store the final result (first one wins), publish it to ``reply_to`` and as an event."""
        if store:
            result = self.records.store_result(result)
        if reply_to:
            self.transport.publish("", reply_to, encode_result(result), correlation_id=correlation_id)
        event = {JobStatus.FINISHED: JobEvent.FINISHED, JobStatus.CANCELLED: JobEvent.CANCELLED}.get(
            result.status, JobEvent.FAILED)
        self._event(result.job_id, event, result=result.to_plain())
        self.metrics.jobs.labels(result.kind or "unknown", str(result.status)).inc()
        logger.info("job %s %s%s", result.job_id, result.status,
                    f": {result.error.code}: {result.error.message}" if result.error else "")

    def _event(self, job_id: str, event: JobEvent, **fields: Any) -> None:
        self.transport.publish(topology.events_exchange(self.prefix),
                               topology.job_event_routing_key(job_id, event),
                               encode_event(job_id, event, worker=self.worker_id, **fields))

    def _dead_letter(self, delivery: JobDelivery, reason: str, field: str, detail: str) -> None:
        logger.warning("dead-lettering a job message from %s: %s: %s: %s", delivery.queue, reason, field,
                       detail)
        try:
            self.transport.dead_letter(delivery, reason, field, detail)
        except PublishRefused as err:  # pragma: no cover - the dead-letter queue is declared by this worker
            logger.error("dead-lettering failed: %s", err)
        self.metrics.dead_letters.labels(reason).inc()

