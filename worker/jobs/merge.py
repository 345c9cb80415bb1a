"""Completing a split rollout from its chunks, by whichever job worker finishes the last one.

The chunks' results live in the shared artifact root. The worker that stores the last finished chunk result
sees all of them there, wins the parent's ``reply.claim`` (``O_CREAT | O_EXCL``: one winner however many
finish at once), merges the statistics exactly (``split.merge_statistics``), moves every chunk's
trajectories under ``<artifact_root>/jobs/<parent>/trajectories/chunk-<i>`` and answers the parent. A chunk
that fails or is cancelled answers the parent at once, through the same claim.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from typing import Any

from maze_engine.rollout.runner import EVENT_LOG_DIR, TRAJECTORY_DIR
from worker.broker.job_transport import JobTransport
from worker.jobs.answers import JobAnswers
from worker.jobs.codec import encode_control
from worker.jobs.records import JobRecords, claim
from worker.jobs.schema import (
    ControlMessage,
    JobError,
    JobErrorCode,
    JobEvent,
    JobMessage,
    JobResult,
    JobStatus,
)
from worker.jobs.split import merge_statistics
from worker.wire import topology

logger = logging.getLogger(__name__)

TRAJECTORIES = "trajectories"
EVENT_LOGS = "event_logs"
REPLY_CLAIM = "reply.claim"


def failed_parent(parent: str, chunk: JobMessage, result: JobResult, records: JobRecords) -> JobResult | None:
    """The parent's result after chunk ``chunk`` ended as ``result`` (failed or cancelled); None when the
    parent was answered already."""
    if not claim(records.job_dir(parent) / REPLY_CLAIM, chunk.job_id):
        return None
    if result.status is JobStatus.CANCELLED:
        error = result.error or JobError("cancelled", "cancelled by request")
        parent_result = JobResult(parent, "rollout", JobStatus.CANCELLED, str(records.job_dir(parent)),
                                  error=error)
    else:
        reason = result.error.message if result.error else "failed"
        parent_result = JobResult(parent, "rollout", JobStatus.FAILED, str(records.job_dir(parent)),
                                  error=JobError(JobErrorCode.CHUNK_FAILED,
                                                 f"chunk {chunk.job_id}: {reason}"))
    return records.store_result(parent_result)


def merge_chunks(parent: str, results: Sequence[JobResult], records: JobRecords) -> JobResult | None:
    """The merged result of all finished chunks of ``parent``; None when another worker merges or merged."""
    directory = records.job_dir(parent)
    if not claim(directory / REPLY_CLAIM, "merge"):
        return None
    trajectories = directory / TRAJECTORIES
    trajectories.mkdir(parents=True, exist_ok=True)
    for index, result in enumerate(sorted(results, key=lambda item: item.job_id)):
        _move(records.output_dir(result.job_id) / TRAJECTORY_DIR, trajectories / f"chunk-{index + 1}")
        _move(records.output_dir(result.job_id) / EVENT_LOG_DIR,
              directory / EVENT_LOGS / f"chunk-{index + 1}")
    statistics = merge_statistics([dict(result.summary.get("statistics") or {}) for result in results])
    summary = {"statistics": statistics, "chunks": len(results), "trajectories": str(trajectories),
               "chunk_ids": sorted(result.job_id for result in results)}
    merged = JobResult(parent, "rollout", JobStatus.FINISHED, str(directory), summary=summary,
                       attempts=max((result.attempts for result in results), default=1))
    logger.info("job %s: merged %d chunks", parent, len(results))
    return records.store_result(merged)


def _move(source: os.PathLike[str] | str, target: os.PathLike[str] | str) -> None:
    try:
        os.makedirs(os.path.dirname(os.fspath(target)), exist_ok=True)
        os.replace(source, target)
    except FileNotFoundError:
        pass  # the chunk recorded nothing of this kind
    except OSError as err:
        logger.warning("could not move %s to %s: %s", source, target, err)


class ChunkCompletion:
    """What a job worker does after storing a chunk's result: answer the parent when it was the last chunk
    (merged) or when it failed or was cancelled (and then cancel the other chunks of a failed split)."""

    def __init__(self, records: JobRecords, answers: JobAnswers, transport: JobTransport,
                 prefix: str) -> None:
        self.records = records
        self.answers = answers
        self.transport = transport
        self.prefix = prefix

    def chunk_done(self, chunk: JobMessage, result: JobResult) -> None:
        assert chunk.chunk_of is not None
        parent = chunk.chunk_of.parent
        record = self.records.record(parent) or {}
        if result.status is not JobStatus.FINISHED:
            self._answer(record, failed_parent(parent, chunk, result, self.records))
            if result.status is JobStatus.FAILED:
                self._cancel_others(parent, f"chunk {chunk.job_id} failed")
            return
        chunk_ids = record.get("chunks") or []
        done = [self.records.result(chunk_id) for chunk_id in chunk_ids]
        finished = sum(1 for item in done if item is not None and item.status is JobStatus.FINISHED)
        self.answers.event(parent, JobEvent.CHUNK, done=finished, chunks=len(chunk_ids), chunk=chunk.job_id)
        if chunk_ids and finished == len(chunk_ids):
            results = [item for item in done if item is not None]
            self._answer(record, merge_chunks(parent, results, self.records))

    def _answer(self, record: dict[str, Any], result: JobResult | None) -> None:
        if result is not None:  # None: another worker answered (or answers) the parent
            self.answers.result(record.get("reply_to"), record.get("correlation_id"), result, store=False)

    def _cancel_others(self, parent: str, reason: str) -> None:
        self.records.mark_cancelled(parent, reason)
        body = encode_control(ControlMessage("cancel", parent, reason))
        self.transport.publish(topology.control_exchange(self.prefix), "", body)
