"""The one error of the job message decoders (``worker.jobs.codec`` and ``worker.jobs.evaluation_spec``),
apart from both so that neither imports the other for it."""

from __future__ import annotations

from worker.errors import WorkerError


class JobDecodeError(WorkerError, ValueError):
    """A job, result or control message does not follow v1; ``field`` names the culprit ("body": all of it).

    ``job_id`` is filled in when it could be read, so an error result can still name the job.
    """

    def __init__(self, field: str, message: str, job_id: str | None = None) -> None:
        super().__init__(message)
        self.field = field
        self.message = message
        self.job_id = job_id
