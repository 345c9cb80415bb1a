"""Control messages of a job worker: ``cancel`` commands from ``<prefix>.control``, and the cancellation marks
they leave in the artifact root.

Every job worker receives every control message (a fanout exchange). A cancel writes the job's mark, so the
worker that takes the job later answers it ``cancelled``; the worker running it (or a chunk of it) stops its
process. Messages come from anyone who may publish to the exchange: each one is handled on its own and
``JobControl.handle`` never raises, so no message can stop the worker.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from worker.jobs.codec import JobDecodeError, decode_control
from worker.jobs.records import JobRecords
from worker.jobs.schema import ControlMessage, JobMessage

logger = logging.getLogger(__name__)

DEFAULT_CANCEL_REASON = "cancelled by request"


class JobControl:
    """Applies control messages to one artifact root; ``stop_running(job_id)`` stops the running job when a
    cancel names it or its split rollout (the job service passes its own)."""

    def __init__(self, records: JobRecords, stop_running: Callable[[str], None]) -> None:
        self.records = records
        self.stop_running = stop_running

    def handle(self, bodies: list[bytes]) -> None:
        """Apply each control message of ``bodies``; a bad one is logged and skipped."""
        for body in bodies:
            try:
                message = decode_control(body)
            except JobDecodeError as err:
                logger.warning("ignoring a control message: %s", err.message)
                continue
            except Exception as err:  # noqa: BLE001 - decoding promises JobDecodeError; this is the backstop
                logger.error("ignoring a control message that could not be decoded (%s)", type(err).__name__)
                continue
            try:
                self.apply(message)
            except Exception as err:  # noqa: BLE001 - e.g. the artifact root is not writable right now
                logger.error("control message %s for job %s failed: %s: %s", message.command, message.job_id,
                             type(err).__name__, err)

    def apply(self, message: ControlMessage) -> None:
        if message.command == "cancel":
            self.records.mark_cancelled(message.job_id, message.reason or DEFAULT_CANCEL_REASON)
            self.stop_running(message.job_id)



def cancellation_of(records: JobRecords, job: JobMessage) -> dict[str, Any] | None:
    """The cancellation mark of ``job``, or of the split rollout it is a chunk of; None when neither has
    one."""
    mark = records.cancellation(job.job_id)
    if mark is None and job.chunk_of is not None:
        mark = records.cancellation(job.chunk_of.parent)
    return mark
