"""How a job worker speaks: final results (stored, then sent to ``reply_to`` and as the final event), progress
events on ``<prefix>.events`` and dead letters, each counted in the job metrics. Error messages pass
``redact`` on the way out, so no credential reaches a submitter or a dead-letter header."""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import Any

from worker.broker.job_transport import JobDelivery, JobTransport, PublishRefused
from worker.jobs.codec import encode_event, encode_result
from worker.jobs.metrics import JobMetrics
from worker.jobs.records import JobRecords
from worker.jobs.redaction import redact
from worker.jobs.schema import JobEvent, JobResult, JobStatus
from worker.wire import topology

logger = logging.getLogger(__name__)

FINAL_EVENTS = {JobStatus.FINISHED: JobEvent.FINISHED, JobStatus.CANCELLED: JobEvent.CANCELLED,
                JobStatus.FAILED: JobEvent.FAILED}


class JobAnswers:
    """Results, events and dead letters of one job worker."""

    def __init__(self, transport: JobTransport, records: JobRecords, metrics: JobMetrics, prefix: str,
                 worker_id: str) -> None:
        self.transport = transport
        self.records = records
        self.metrics = metrics
        self.prefix = prefix
        self.worker_id = worker_id

    def result(self, reply_to: str | None, correlation_id: str | None, result: JobResult,
               store: bool = True) -> JobResult:
        """Store the final result (the first stored one wins and is what is sent), publish it to ``reply_to``
        and as the final event; returns what was sent."""
        if result.error is not None:
            result = replace(result, error=replace(result.error, message=redact(result.error.message)))
        if store:
            result = self.records.store_result(result)
        if reply_to:
            self.transport.publish("", reply_to, encode_result(result), correlation_id=correlation_id)
            # The channel confirms publishes: from here on a leftover copy of the job need not answer again.
            self.records.update_record(result.job_id, answered=True)
        self.event(result.job_id, FINAL_EVENTS.get(result.status, JobEvent.FAILED), result=result.to_plain())
        self.metrics.jobs.labels(result.kind or "unknown", str(result.status)).inc()
        logger.info("job %s %s%s", result.job_id, result.status,
                    f": {result.error.code}: {result.error.message}" if result.error else "")
        return result

    def event(self, job_id: str, event: JobEvent, **fields: Any) -> None:
        """Publish ``job.<job_id>.<event>`` with ``fields``."""
        self.transport.publish(topology.events_exchange(self.prefix),
                               topology.job_event_routing_key(job_id, event),
                               encode_event(job_id, event, worker=self.worker_id, **fields))

    def dead_letter(self, delivery: JobDelivery, reason: str, field: str, detail: str) -> None:
        """Send the job message to ``<prefix>.dead`` with why (the caller acknowledges the original)."""
        detail = redact(detail)
        logger.warning("dead-lettering a job message from %s: %s: %s: %s", delivery.queue, reason, field,
                       detail)
        try:
            self.transport.dead_letter(delivery, reason, field, detail)
        except PublishRefused as err:  # pragma: no cover - the dead-letter queue is declared by this worker
            logger.error("dead-lettering failed: %s", err)
        self.metrics.dead_letters.labels(reason).inc()
