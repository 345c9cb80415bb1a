"""Job records in the shared artifact root: what every job worker (and ``jobs status``) can read.

``<artifact_root>/jobs/<job_id>/`` holds:

- ``job.json``: the job record (status, attempts, worker, times, reply address), rewritten atomically;
- ``result.json``: the final result, written once (atomically; a second writer keeps the first);
- ``cancel.json``: the cancellation mark, so a job cancelled while queued is answered as cancelled by
  whichever worker takes it later;
- ``progress.jsonl``: the child process's progress lines (epochs), appended;
- ``child.log``: the child's output; ``output/``: the run's own output directory;
- ``*.claim``: markers created with ``O_CREAT | O_EXCL``, so exactly one process wins a race (merging a split
  rollout, answering its parent).
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from worker.jobs.codec import JobDecodeError, check_job_id, result_from_plain
from worker.jobs.schema import MAX_JOB_ID_LENGTH, JobResult

JOBS_DIR = "jobs"
RECORD_FILE = "job.json"
RESULT_FILE = "result.json"
CANCEL_FILE = "cancel.json"
PROGRESS_FILE = "progress.jsonl"
LOG_FILE = "child.log"
SPEC_FILE = "spec.json"
OUTPUT_DIR = "output"


def write_json_atomic(path: Path, value: Any) -> None:
    """Write ``value`` as JSON to ``path`` through a temporary file and a rename: all or nothing."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as file:
            json.dump(value, file, indent=1, sort_keys=True, allow_nan=False)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        with _suppressed():
            os.unlink(temporary)
        raise


def read_json(path: Path) -> Any:
    """The JSON in ``path``, or None when it does not exist or is unreadable (a torn write cannot happen)."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def claim(path: Path, owner: str = "") -> bool:
    """Create ``path`` exclusively; True for the one caller that created it, False for everyone else."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        handle = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        return False
    with os.fdopen(handle, "w", encoding="utf-8") as file:
        file.write(json.dumps({"owner": owner, "time": time.time()}))
    return True


class _suppressed:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: Any) -> bool:
        return exc[0] is not None and issubclass(exc[0], OSError)


class JobRecords:
    """The job directories under one artifact root."""

    def __init__(self, artifact_root: str | os.PathLike[str]) -> None:
        self.root = Path(artifact_root)

    def job_dir(self, job_id: str) -> Path:
        """``<root>/jobs/<job_id>``; the id is checked, so it can never name a path outside the root."""
        return self.root / JOBS_DIR / check_job_id(job_id, MAX_JOB_ID_LENGTH)

    def output_dir(self, job_id: str) -> Path:
        return self.job_dir(job_id) / OUTPUT_DIR

    # -- the record ---------------------------------------------------------------------------------------

    def record(self, job_id: str) -> dict[str, Any] | None:
        value = read_json(self.job_dir(job_id) / RECORD_FILE)
        return value if isinstance(value, dict) else None

    def update_record(self, job_id: str, **fields: Any) -> dict[str, Any]:
        """Merge ``fields`` into the record (``updated`` is set) and write it atomically; returns it."""
        record = self.record(job_id) or {"job_id": job_id, "created": time.time()}
        record.update(fields)
        record["updated"] = time.time()
        write_json_atomic(self.job_dir(job_id) / RECORD_FILE, record)
        return record

    # -- results ------------------------------------------------------------------------------------------

    def result(self, job_id: str) -> JobResult | None:
        """The stored final result, or None (also for a damaged file, which a new run then replaces)."""
        value = read_json(self.job_dir(job_id) / RESULT_FILE)
        if value is None:
            return None
        try:
            return result_from_plain(value)
        except JobDecodeError:
            return None

    def store_result(self, result: JobResult) -> JobResult:
        """Store ``result`` unless one is stored already; returns the stored one (first writer wins)."""
        stored = self.result(result.job_id)
        if stored is not None:
            return stored
        directory = self.job_dir(result.job_id)
        if claim(directory / "result.claim"):
            write_json_atomic(directory / RESULT_FILE, result.to_plain())
            self.update_record(result.job_id, status=str(result.status))
            return result
        for _ in range(100):  # another process is writing it right now
            stored = self.result(result.job_id)
            if stored is not None:
                return stored
            time.sleep(0.05)
        write_json_atomic(directory / RESULT_FILE, result.to_plain())
        return result

    # -- cancellation -------------------------------------------------------------------------------------

    def mark_cancelled(self, job_id: str, reason: str = "") -> None:
        """Remember that ``job_id`` is cancelled (idempotent: the first mark stays)."""
        path = self.job_dir(job_id) / CANCEL_FILE
        if not path.exists():
            write_json_atomic(path, {"job_id": job_id, "reason": reason, "time": time.time()})

    def cancellation(self, job_id: str) -> dict[str, Any] | None:
        """The cancellation mark of ``job_id`` or None."""
        value = read_json(self.job_dir(job_id) / CANCEL_FILE)
        return value if isinstance(value, dict) else None
