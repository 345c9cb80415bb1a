"""Job messages v1: the job a client submits, the final result, progress events and control commands.

Every message is a msgpack map (docs/protocol.md, "Jobs"). The dataclasses are frozen; ``decode_*`` functions
are separate and raise ``JobDecodeError`` naming the field, never anything else for arbitrary bytes.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import msgpack

JOB_PROTOCOL_VERSION = 1
MAX_JOB_ID_LENGTH = 128
MAX_SUBMITTED_JOB_ID_LENGTH = 100
"""Submitted ids leave room for the suffix of chunk ids (``<id>_chunk-3-of-8``)."""
MAX_OVERRIDES = 200
MAX_CHUNKS = 1000

JOB_ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*")
"""A job id names a directory and sits in routing keys: no dots, slashes or spaces."""
_CONFIG_PATTERN = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_-]{0,63}")
_POLICY_PATTERN = re.compile(r"[A-Za-z0-9._-]{1,64}")


class JobKind(StrEnum):
    """What a job does."""

    TRAIN = "train"
    """A training run (``maze-run -cn conf_train ...``)."""
    ROLLOUT = "rollout"
    """A rollout (``maze-run ...`` with the rollout config)."""


DEFAULT_CONFIGS = {JobKind.TRAIN: "conf_train", JobKind.ROLLOUT: "conf_rollout"}
"""The config a job composes when it names none."""


class JobStatus(StrEnum):
    """Where a job stands; the last three are final."""

    QUEUED = "queued"
    RUNNING = "running"
    FINISHED = "finished"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def final(self) -> bool:
        return self in (JobStatus.FINISHED, JobStatus.FAILED, JobStatus.CANCELLED)


class JobEvent(StrEnum):
    """The ``<event>`` of routing key ``job.<job_id>.<event>`` on ``<prefix>.events``."""

    ACCEPTED = "accepted"
    STARTED = "started"
    EPOCH = "epoch"
    CHUNK = "chunk"
    FINISHED = "finished"
    FAILED = "failed"
    CANCELLED = "cancelled"


class JobErrorCode(StrEnum):
    """``error.code`` of a failed job's result."""

    BAD_JOB = "bad_job"
    """The message is not a valid job v1 (the message names the field)."""
    CONFIG = "config"
    """The config does not compose or the engine rejects a value (deterministic: never retried)."""
    CRASHED = "crashed"
    """The child process died (signal, out of memory) or raised; retried up to the delivery limit."""
    TIME_LIMIT = "time_limit"
    """The job ran longer than its ``time_limit_s`` and was stopped."""
    CHUNK_FAILED = "chunk_failed"
    """A chunk of a distributed rollout failed; the error names it."""
    PUBLISH = "publish_policy"
    """Training finished, but publishing its policy failed."""


@dataclass(frozen=True)
class ChunkOf:
    """Marks a job as chunk ``index`` (0-based) of ``count`` of the distributed rollout ``parent``."""

    parent: str
    index: int
    count: int


@dataclass(frozen=True)
class JobMessage:
    """A job as submitted (decoded, or about to be encoded)."""

    job_id: str
    """Client-chosen id; also the idempotency key: a finished id answers with its stored result."""
    kind: JobKind
    config: str
    """Primary config name, ``conf_train`` / ``conf_rollout`` unless set."""
    overrides: tuple[str, ...] = ()
    """Hydra overrides, exactly as ``maze-run`` takes them."""
    time_limit_s: float | None = None
    publish_policy: str | None = None
    """Training only: publish the trained policy under this name when the job finishes."""
    chunks: int | None = None
    """Rollout only: split into this many chunk jobs run by any job worker, merged into one result."""
    chunk_of: ChunkOf | None = None
    """Set on the chunk jobs a worker creates from a split rollout."""
    v: int = JOB_PROTOCOL_VERSION


@dataclass(frozen=True)
class JobError:
    """The ``error`` map of a failed job's result."""

    code: str
    message: str


@dataclass(frozen=True)
class JobResult:
    """The final answer to a job: published to its ``reply_to`` and stored as ``result.json``."""

    job_id: str
    kind: str
    status: JobStatus
    output_dir: str
    summary: Mapping[str, Any] = field(default_factory=dict)
    error: JobError | None = None
    policy: Mapping[str, Any] | None = None
    """``{name, version}`` of the policy a training job published."""
    attempts: int = 1
    v: int = JOB_PROTOCOL_VERSION

    def to_plain(self) -> dict[str, Any]:
        """The wire (and ``result.json``) form."""
        return {"v": self.v, "job_id": self.job_id, "kind": self.kind, "status": str(self.status),
                "output_dir": self.output_dir, "summary": finite_plain(dict(self.summary)),
                "error": (None if self.error is None
                          else {"code": self.error.code, "message": self.error.message}),
                "policy": None if self.policy is None else dict(self.policy), "attempts": self.attempts}


@dataclass(frozen=True)
class ControlMessage:
    """A command on ``<prefix>.control``: ``cancel`` stops a queued or running job."""

    command: str
    job_id: str
    reason: str = ""
    v: int = JOB_PROTOCOL_VERSION


CONTROL_COMMANDS = ("cancel",)


class JobDecodeError(ValueError):
    """A job, result or control message does not follow v1; ``field`` names the culprit ("body": all of it).

    ``job_id`` is filled in when it could be read, so an error result can still name the job.
    """

    def __init__(self, field: str, message: str, job_id: str | None = None) -> None:
        super().__init__(message)
        self.field = field
        self.message = message
        self.job_id = job_id


# ------------------------------------------------------------------------------------------------ checks

def _describe(value: Any) -> str:
    if value is _MISSING:
        return "nothing (the key is missing)"
    if value is None:
        return "nil"
    text = repr(value)
    return f"{type(value).__name__} {text[:60]}{'...' if len(text) > 60 else ''}"


_MISSING: Any = object()


def job_id_problem(value: Any, limit: int = MAX_SUBMITTED_JOB_ID_LENGTH) -> str | None:
    """Why ``value`` is not a usable job id, or None."""
    if type(value) is not str or not 0 < len(value) <= limit or not JOB_ID_PATTERN.fullmatch(value):
        return (f"job_id: expected 1-{limit} letters, digits, '_' or '-', starting with a letter or digit, "
                f"got {_describe(value)}")
    return None


def check_job_id(value: Any, limit: int = MAX_SUBMITTED_JOB_ID_LENGTH) -> str:
    """``value`` if it is a usable job id; raises JobDecodeError("job_id") otherwise."""
    problem = job_id_problem(value, limit)
    if problem is not None:
        raise JobDecodeError("job_id", problem)
    return value


def _unpack(body: Any) -> dict[str, Any]:
    if not isinstance(body, bytes | bytearray | memoryview):
        raise JobDecodeError("body", f"body: expected bytes, got {type(body).__name__}")
    try:
        obj = msgpack.unpackb(body, raw=False, strict_map_key=False)
    except Exception as err:  # msgpack raises several unrelated types for corrupt input
        raise JobDecodeError("body", f"body: expected a msgpack map, got undecodable bytes "
                                     f"({type(err).__name__}: {err})") from None
    if not isinstance(obj, dict):
        raise JobDecodeError("body", f"body: expected a msgpack map, got {_describe(obj)}")
    return obj


def _version(obj: Mapping[str, Any], job_id: str | None) -> None:
    value = obj.get("v", _MISSING)
    if type(value) is not int or value != JOB_PROTOCOL_VERSION:
        raise JobDecodeError("v", f"v: expected {JOB_PROTOCOL_VERSION}, got {_describe(value)}", job_id)


def _optional_positive(obj: Mapping[str, Any], name: str, job_id: str, integer: bool,
                       maximum: float = math.inf) -> Any:
    value = obj.get(name)
    if value is None:
        return None
    kinds: tuple[type, ...] = (int,) if integer else (int, float)
    if type(value) not in kinds or not 0 < value <= maximum or not math.isfinite(value):
        expected = "an integer" if integer else "a number"
        bound = f" in (0, {maximum:g}]" if math.isfinite(maximum) else " > 0"
        raise JobDecodeError(name, f"{name}: expected nil or {expected}{bound}, got {_describe(value)}",
                             job_id)
    return value


def decode_job(body: Any) -> JobMessage:
    """A ``JobMessage`` from a msgpack body; raises JobDecodeError naming the field."""
    obj = _unpack(body)
    raw_id = obj.get("job_id", _MISSING)
    chunk_raw = obj.get("chunk_of")
    limit = MAX_JOB_ID_LENGTH if chunk_raw is not None else MAX_SUBMITTED_JOB_ID_LENGTH
    job_id = check_job_id(raw_id if raw_id is not _MISSING else _MISSING, limit)
    _version(obj, job_id)
    kind_raw = obj.get("kind", _MISSING)
    if kind_raw not in tuple(JobKind):
        raise JobDecodeError("kind", f"kind: expected one of {[str(k) for k in JobKind]}, got "
                                     f"{_describe(kind_raw)}", job_id)
    kind = JobKind(kind_raw)
    config = obj.get("config")
    if config is None:
        config = DEFAULT_CONFIGS[kind]
    if type(config) is not str or not _CONFIG_PATTERN.fullmatch(config):
        raise JobDecodeError("config", f"config: expected nil or a config name (letters, digits, '_', '-'), "
                                       f"got {_describe(config)}", job_id)
    overrides = _overrides(obj.get("overrides"), job_id)
    time_limit = _optional_positive(obj, "time_limit_s", job_id, integer=False)
    publish = obj.get("publish_policy")
    if publish is not None:
        if type(publish) is not str or not _POLICY_PATTERN.fullmatch(publish):
            raise JobDecodeError("publish_policy", "publish_policy: expected nil or a policy name (1-64 "
                                 f"letters, digits, '_', '-', '.'), got {_describe(publish)}", job_id)
        if kind is not JobKind.TRAIN:
            raise JobDecodeError("publish_policy", "publish_policy: only a train job publishes a policy, "
                                                   f"got one on a {kind} job", job_id)
    chunks = _optional_positive(obj, "chunks", job_id, integer=True, maximum=MAX_CHUNKS)
    if chunks is not None and kind is not JobKind.ROLLOUT:
        raise JobDecodeError("chunks", f"chunks: only a rollout job is split into chunks, got one on a "
                                       f"{kind} job", job_id)
    chunk_of = None if chunk_raw is None else _chunk_of(chunk_raw, job_id)
    return JobMessage(job_id=job_id, kind=kind, config=config, overrides=overrides,
                      time_limit_s=None if time_limit is None else float(time_limit), publish_policy=publish,
                      chunks=chunks, chunk_of=chunk_of)


def _overrides(value: Any, job_id: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or len(value) > MAX_OVERRIDES:
        raise JobDecodeError("overrides", f"overrides: expected a list of at most {MAX_OVERRIDES} strings, "
                                          f"got {_describe(value)}", job_id)
    for index, item in enumerate(value):
        if type(item) is not str or not item.strip() or len(item) > 1000:
            raise JobDecodeError(f"overrides[{index}]", f"overrides[{index}]: expected a Hydra override "
                                 f"such as 'env.name=CartPole-v1', got {_describe(item)}", job_id)
    return tuple(value)


def _chunk_of(value: Any, job_id: str) -> ChunkOf:
    if not isinstance(value, dict):
        raise JobDecodeError("chunk_of", f"chunk_of: expected nil or a map, got {_describe(value)}", job_id)
    parent, index, count = value.get("parent"), value.get("index"), value.get("count")
    problem = job_id_problem(parent)
    if problem is not None:
        raise JobDecodeError("chunk_of.parent", "chunk_of.parent" + problem.removeprefix("job_id"), job_id)
    if type(count) is not int or not 0 < count <= MAX_CHUNKS:
        raise JobDecodeError("chunk_of.count", f"chunk_of.count: expected an integer in [1, {MAX_CHUNKS}], "
                                               f"got {_describe(count)}", job_id)
    if type(index) is not int or not 0 <= index < count:
        raise JobDecodeError("chunk_of.index", f"chunk_of.index: expected an integer in [0, {count}), got "
                                               f"{_describe(index)}", job_id)
    return ChunkOf(str(parent), index, count)


def best_effort_job_id(body: Any) -> str | None:
    """The job id of an undecodable or invalid job message, where one can be read."""
    try:
        obj = _unpack(body)
    except JobDecodeError:
        return None
    value = obj.get("job_id")
    return value if job_id_problem(value, MAX_JOB_ID_LENGTH) is None else None


def encode_job(job: JobMessage) -> bytes:
    """The msgpack body of ``job``; checked by decoding it again, so nothing invalid leaves a client."""
    obj: dict[str, Any] = {"v": job.v, "job_id": job.job_id, "kind": str(job.kind), "config": job.config,
                           "overrides": list(job.overrides)}
    if job.time_limit_s is not None:
        obj["time_limit_s"] = job.time_limit_s
    if job.publish_policy is not None:
        obj["publish_policy"] = job.publish_policy
    if job.chunks is not None:
        obj["chunks"] = job.chunks
    if job.chunk_of is not None:
        obj["chunk_of"] = {"parent": job.chunk_of.parent, "index": job.chunk_of.index,
                           "count": job.chunk_of.count}
    body: bytes = msgpack.packb(obj, use_bin_type=True)
    decode_job(body)
    return body


def new_job(job_id: str, kind: str, overrides: Sequence[str] = (), config: str | None = None,
            time_limit_s: float | None = None, publish_policy: str | None = None,
            chunks: int | None = None) -> JobMessage:
    """A checked JobMessage from plain arguments (what the CLI and JobClient build); raises JobDecodeError."""
    obj = {"v": JOB_PROTOCOL_VERSION, "job_id": job_id, "kind": kind, "config": config,
           "overrides": list(overrides), "time_limit_s": time_limit_s, "publish_policy": publish_policy,
           "chunks": chunks}
    return decode_job(msgpack.packb(obj, use_bin_type=True))


# --------------------------------------------------------------------------------------- results, events

def encode_result(result: JobResult) -> bytes:
    body: bytes = msgpack.packb(result.to_plain(), use_bin_type=True)
    return body


def result_from_plain(obj: Any) -> JobResult:
    """A JobResult from its plain form (a decoded reply or ``result.json``); raises JobDecodeError."""
    if not isinstance(obj, dict):
        raise JobDecodeError("body", f"body: expected a map, got {_describe(obj)}")
    job_id = obj.get("job_id")
    if job_id_problem(job_id, MAX_JOB_ID_LENGTH) is not None:
        raise JobDecodeError("job_id", job_id_problem(job_id, MAX_JOB_ID_LENGTH) or "")
    status = obj.get("status")
    if status not in tuple(JobStatus) or not JobStatus(status).final:
        raise JobDecodeError("status", "status: expected finished, failed or cancelled, got "
                             f"{_describe(status)}",
                             job_id)
    error = obj.get("error")
    if error is not None and not (isinstance(error, dict) and isinstance(error.get("code"), str)):
        raise JobDecodeError("error", f"error: expected nil or a map with a code, got {_describe(error)}",
                             job_id)
    summary = obj.get("summary") or {}
    if not isinstance(summary, dict):
        raise JobDecodeError("summary", f"summary: expected a map, got {_describe(summary)}", job_id)
    return JobResult(job_id=str(job_id), kind=str(obj.get("kind", "")), status=JobStatus(status),
                     output_dir=str(obj.get("output_dir", "")), summary=summary,
                     error=None if error is None else JobError(error["code"], str(error.get("message", ""))),
                     policy=obj.get("policy"), attempts=int(obj.get("attempts") or 1))


def decode_result(body: Any) -> JobResult:
    """A JobResult from a reply body; raises JobDecodeError naming the field."""
    return result_from_plain(_unpack(body))


def encode_event(job_id: str, event: JobEvent, **fields: Any) -> bytes:
    """Body of a progress event: ``{v, job_id, event, time, ...fields}``."""
    import time

    obj = {"v": JOB_PROTOCOL_VERSION, "job_id": job_id, "event": str(event), "time": time.time(),
           **finite_plain(fields)}
    body: bytes = msgpack.packb(obj, use_bin_type=True)
    return body


def decode_event(body: Any) -> dict[str, Any]:
    """A progress event as a plain map (``job_id`` and ``event`` checked); raises JobDecodeError."""
    obj = _unpack(body)
    if not isinstance(obj.get("job_id"), str) or obj.get("event") not in tuple(JobEvent):
        raise JobDecodeError("event", f"event: expected one of {[str(e) for e in JobEvent]}, got "
                                      f"{_describe(obj.get('event'))}")
    return obj


def encode_control(message: ControlMessage) -> bytes:
    body: bytes = msgpack.packb({"v": message.v, "command": message.command, "job_id": message.job_id,
                                 "reason": message.reason}, use_bin_type=True)
    decode_control(body)
    return body


def decode_control(body: Any) -> ControlMessage:
    """A ControlMessage; raises JobDecodeError naming the field."""
    obj = _unpack(body)
    _version(obj, None)
    command = obj.get("command", _MISSING)
    if command not in CONTROL_COMMANDS:
        raise JobDecodeError("command", f"command: expected one of {list(CONTROL_COMMANDS)}, got "
                                        f"{_describe(command)}")
    job_id = check_job_id(obj.get("job_id", _MISSING), MAX_JOB_ID_LENGTH)
    reason = obj.get("reason") or ""
    if not isinstance(reason, str):
        raise JobDecodeError("reason", f"reason: expected nil or a string, got {_describe(reason)}", job_id)
    return ControlMessage(command=command, job_id=job_id, reason=reason[:500])


def finite_plain(value: Any) -> Any:
    """``value`` with NaN and infinities as nil and numpy scalars as plain numbers (JSON and most msgpack
    readers want plain numbers)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {str(key): finite_plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [finite_plain(item) for item in value]
    if hasattr(value, "item"):  # numpy scalars
        return finite_plain(value.item())
    return value
