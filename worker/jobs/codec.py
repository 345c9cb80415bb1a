"""Encoding and decoding job messages v1 (msgpack maps, docs/protocol.md "Jobs").

``decode_*`` take arbitrary bytes and raise ``JobDecodeError`` naming the field, never anything else: a value
is described for an error message with a bounded ``describe`` (a deeply nested list cannot make it recurse).
``encode_*`` check what they build by decoding it again, so nothing invalid leaves a client.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from typing import Any

import msgpack

from worker.jobs.decode_error import JobDecodeError
from worker.jobs.evaluation_spec import decode_evaluation, evaluation_plain
from worker.jobs.schema import (
    CONFIG_PATTERN,
    CONTROL_COMMANDS,
    DEFAULT_CONFIGS,
    JOB_ID_PATTERN,
    JOB_PROTOCOL_VERSION,
    MAX_CHUNKS,
    MAX_JOB_ID_LENGTH,
    MAX_OVERRIDES,
    MAX_SUBMITTED_JOB_ID_LENGTH,
    POLICY_NAME_PATTERN,
    ChunkOf,
    ControlMessage,
    EvaluationSpec,
    JobError,
    JobEvent,
    JobKind,
    JobMessage,
    JobResult,
    JobStatus,
    finite_plain,
)
from worker.wire.checks import MISSING, describe

# ------------------------------------------------------------------------------------------------ checks

def job_id_problem(value: Any, limit: int = MAX_SUBMITTED_JOB_ID_LENGTH) -> str | None:
    """Why ``value`` is not a usable job id, or None."""
    if type(value) is not str or not 0 < len(value) <= limit or not JOB_ID_PATTERN.fullmatch(value):
        return (f"job_id: expected 1-{limit} letters, digits, '_' or '-', starting with a letter or digit, "
                f"got {describe(value)}")
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
                                     f"({type(err).__name__}: {str(err)[:100]})") from None
    if not isinstance(obj, dict):
        raise JobDecodeError("body", f"body: expected a msgpack map, got {describe(obj)}")
    return obj


def _version(obj: Mapping[str, Any], job_id: str | None) -> None:
    value = obj.get("v", MISSING)
    if type(value) is not int or value != JOB_PROTOCOL_VERSION:
        raise JobDecodeError("v", f"v: expected {JOB_PROTOCOL_VERSION}, got {describe(value)}", job_id)


def _optional_positive(obj: Mapping[str, Any], name: str, job_id: str, integer: bool,
                       maximum: float = math.inf) -> Any:
    value = obj.get(name)
    if value is None:
        return None
    kinds: tuple[type, ...] = (int,) if integer else (int, float)
    if type(value) not in kinds or not 0 < value <= maximum or not math.isfinite(value):
        expected = "an integer" if integer else "a number"
        bound = f" in (0, {maximum:g}]" if math.isfinite(maximum) else " > 0"
        raise JobDecodeError(name, f"{name}: expected nil or {expected}{bound}, got {describe(value)}",
                             job_id)
    return value


def decode_job(body: Any) -> JobMessage:
    """A ``JobMessage`` from a msgpack body; raises JobDecodeError naming the field."""
    obj = _unpack(body)
    raw_id = obj.get("job_id", MISSING)
    chunk_raw = obj.get("chunk_of")
    limit = MAX_JOB_ID_LENGTH if chunk_raw is not None else MAX_SUBMITTED_JOB_ID_LENGTH
    job_id = check_job_id(raw_id if raw_id is not MISSING else MISSING, limit)
    _version(obj, job_id)
    kind_raw = obj.get("kind", MISSING)
    if kind_raw not in tuple(JobKind):
        raise JobDecodeError("kind", f"kind: expected one of {[str(k) for k in JobKind]}, got "
                                     f"{describe(kind_raw)}", job_id)
    kind = JobKind(kind_raw)
    evaluation = _evaluation(obj, kind, job_id)
    config = "" if evaluation is not None else obj.get("config")
    if config is None:
        config = DEFAULT_CONFIGS[kind]
    if evaluation is None and (type(config) is not str or not CONFIG_PATTERN.fullmatch(config)):
        raise JobDecodeError("config", f"config: expected nil or a config name (letters, digits, '_', '-'), "
                                       f"got {describe(config)}", job_id)
    overrides = _overrides(obj.get("overrides"), job_id)
    time_limit = _optional_positive(obj, "time_limit_s", job_id, integer=False)
    publish = obj.get("publish_policy")
    if publish is not None:
        if type(publish) is not str or not POLICY_NAME_PATTERN.fullmatch(publish):
            raise JobDecodeError("publish_policy", "publish_policy: expected nil or a policy name (1-64 "
                                 "letters, digits, '_', '-', '.', starting with a letter or digit), got "
                                 f"{describe(publish)}", job_id)
        if kind is not JobKind.TRAIN:
            raise JobDecodeError("publish_policy", "publish_policy: only a train job publishes a policy, "
                                                   f"got one on a {kind} job", job_id)
    force = obj.get("force_publish")
    if force is not None:
        if type(force) is not bool:
            raise JobDecodeError("force_publish", f"force_publish: expected nil or a boolean, got "
                                                  f"{describe(force)}", job_id)
        if force and publish is None:
            raise JobDecodeError("force_publish", "force_publish: expected only with publish_policy, got "
                                                  "true on a job that publishes nothing", job_id)
    canary, auto, min_episodes = _canary(obj, publish, job_id)
    shadow = obj.get("shadow")
    if shadow is not None and type(shadow) is not bool:
        raise JobDecodeError("shadow", f"shadow: expected nil or a boolean, got {describe(shadow)}", job_id)
    if shadow and (publish is None or canary is not None):
        raise JobDecodeError("shadow", "shadow: expected only with publish_policy and without canary (a new "
                                       "version runs either in shadow or as a canary)", job_id)
    chunks = _optional_positive(obj, "chunks", job_id, integer=True, maximum=MAX_CHUNKS)
    if chunks is not None and kind is not JobKind.ROLLOUT:
        raise JobDecodeError("chunks", f"chunks: only a rollout job is split into chunks, got one on a "
                                       f"{kind} job", job_id)
    chunk_of = None if chunk_raw is None else _chunk_of(chunk_raw, job_id)
    return JobMessage(job_id=job_id, kind=kind, config=config, overrides=overrides,
                      time_limit_s=None if time_limit is None else float(time_limit), publish_policy=publish,
                      force_publish=bool(force), chunks=chunks, chunk_of=chunk_of, canary=canary,
                      canary_auto=auto, canary_min_episodes=min_episodes, evaluation=evaluation,
                      shadow=bool(shadow))


def _evaluation(obj: dict[str, Any], kind: JobKind, job_id: str) -> EvaluationSpec | None:
    """An evaluate job's checked ``evaluation`` (it composes no config and takes no overrides); None for
    the other kinds, which may not carry one."""
    if kind is not JobKind.EVALUATE:
        if obj.get("evaluation") is not None:
            raise JobDecodeError("evaluation", f"evaluation: only an evaluate job carries one, got one on a "
                                               f"{kind} job", job_id)
        return None
    for name in ("config", "overrides"):
        if obj.get(name) not in (None, []):
            raise JobDecodeError(name, f"{name}: expected nil; an evaluate job composes no config and takes "
                                       f"no overrides (its settings are in evaluation), got "
                                       f"{describe(obj[name])}", job_id)
    return decode_evaluation(obj.get("evaluation", MISSING), job_id)


def _canary(obj: dict[str, Any], publish: Any, job_id: str) -> tuple[float | None, bool, int | None]:
    """``canary``, ``canary_auto`` and ``canary_min_episodes``, checked (only with ``publish_policy``)."""
    canary, auto = obj.get("canary"), obj.get("canary_auto")
    if canary is not None:
        if isinstance(canary, bool) or not isinstance(canary, int | float) or not 0 < canary < 1:
            raise JobDecodeError("canary", "canary: expected nil or a share of new episodes strictly "
                                           f"between 0 and 1, got {describe(canary)}", job_id)
        if publish is None:
            raise JobDecodeError("canary", "canary: expected only with publish_policy", job_id)
    if auto is not None and type(auto) is not bool:
        raise JobDecodeError("canary_auto", f"canary_auto: expected nil or a boolean, got {describe(auto)}",
                             job_id)
    if auto and canary is None:
        raise JobDecodeError("canary_auto", "canary_auto: expected only with canary", job_id)
    minimum = _optional_positive(obj, "canary_min_episodes", job_id, integer=True, maximum=1_000_000)
    if minimum is not None and (not auto or minimum < 2):
        raise JobDecodeError("canary_min_episodes", "canary_min_episodes: expected an integer >= 2, only "
                                                    f"with canary_auto, got {describe(minimum)}", job_id)
    return None if canary is None else float(canary), bool(auto), minimum


def _overrides(value: Any, job_id: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or len(value) > MAX_OVERRIDES:
        raise JobDecodeError("overrides", f"overrides: expected a list of at most {MAX_OVERRIDES} strings, "
                                          f"got {describe(value)}", job_id)
    for index, item in enumerate(value):
        if type(item) is not str or not item.strip() or len(item) > 1000:
            raise JobDecodeError(f"overrides[{index}]", f"overrides[{index}]: expected a Hydra override "
                                 f"such as 'env.name=CartPole-v1', got {describe(item)}", job_id)
    return tuple(value)


def _chunk_of(value: Any, job_id: str) -> ChunkOf:
    if not isinstance(value, dict):
        raise JobDecodeError("chunk_of", f"chunk_of: expected nil or a map, got {describe(value)}", job_id)
    parent, index, count = value.get("parent"), value.get("index"), value.get("count")
    problem = job_id_problem(parent)
    if problem is not None:
        raise JobDecodeError("chunk_of.parent", "chunk_of.parent" + problem.removeprefix("job_id"), job_id)
    if type(count) is not int or not 0 < count <= MAX_CHUNKS:
        raise JobDecodeError("chunk_of.count", f"chunk_of.count: expected an integer in [1, {MAX_CHUNKS}], "
                                               f"got {describe(count)}", job_id)
    if type(index) is not int or not 0 <= index < count:
        raise JobDecodeError("chunk_of.index", f"chunk_of.index: expected an integer in [0, {count}), got "
                                               f"{describe(index)}", job_id)
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
    obj: dict[str, Any] = {"v": job.v, "job_id": job.job_id, "kind": str(job.kind),
                           "config": job.config or None, "overrides": list(job.overrides)}
    if job.evaluation is not None:
        obj["evaluation"] = evaluation_plain(job.evaluation)
    if job.time_limit_s is not None:
        obj["time_limit_s"] = job.time_limit_s
    if job.publish_policy is not None:
        obj["publish_policy"] = job.publish_policy
    if job.force_publish:
        obj["force_publish"] = True
    if job.canary is not None:
        obj.update(canary=job.canary, canary_auto=job.canary_auto)
    if job.canary_min_episodes is not None:
        obj["canary_min_episodes"] = job.canary_min_episodes
    if job.shadow:
        obj["shadow"] = True
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
            chunks: int | None = None, force_publish: bool = False, canary: float | None = None,
            canary_auto: bool = False, canary_min_episodes: int | None = None,
            evaluation: Mapping[str, Any] | None = None, shadow: bool = False) -> JobMessage:
    """A checked JobMessage from plain arguments (what the CLI and JobClient build); raises JobDecodeError.

    ``evaluation`` is an evaluate job's map (docs/jobs.md): ``{"policy": "published:NAME@VERSION",
    "dataset": ..., "gamma": ..., ...}``."""
    obj = {"v": JOB_PROTOCOL_VERSION, "job_id": job_id, "kind": kind, "config": config,
           "overrides": list(overrides), "time_limit_s": time_limit_s, "publish_policy": publish_policy,
           "force_publish": force_publish, "chunks": chunks, "canary": canary,
           "canary_auto": canary_auto or None, "canary_min_episodes": canary_min_episodes,
           "evaluation": None if evaluation is None else dict(evaluation), "shadow": shadow or None}
    return decode_job(msgpack.packb(obj, use_bin_type=True))


# --------------------------------------------------------------------------------------- results, events

def encode_result(result: JobResult) -> bytes:
    body: bytes = msgpack.packb(result.to_plain(), use_bin_type=True)
    return body


def result_from_plain(obj: Any) -> JobResult:
    """A JobResult from its plain form (a decoded reply or ``result.json``); raises JobDecodeError."""
    if not isinstance(obj, dict):
        raise JobDecodeError("body", f"body: expected a map, got {describe(obj)}")
    job_id = obj.get("job_id")
    if job_id_problem(job_id, MAX_JOB_ID_LENGTH) is not None:
        raise JobDecodeError("job_id", job_id_problem(job_id, MAX_JOB_ID_LENGTH) or "")
    status = obj.get("status")
    if status not in tuple(JobStatus) or not JobStatus(status).final:
        raise JobDecodeError("status", "status: expected finished, failed or cancelled, got "
                             f"{describe(status)}",
                             job_id)
    error = obj.get("error")
    if error is not None and not (isinstance(error, dict) and isinstance(error.get("code"), str)):
        raise JobDecodeError("error", f"error: expected nil or a map with a code, got {describe(error)}",
                             job_id)
    summary = obj.get("summary") or {}
    if not isinstance(summary, dict):
        raise JobDecodeError("summary", f"summary: expected a map, got {describe(summary)}", job_id)
    return JobResult(job_id=str(job_id), kind=str(obj.get("kind", "")), status=JobStatus(status),
                     output_dir=str(obj.get("output_dir", "")), summary=summary,
                     error=None if error is None else JobError(error["code"], str(error.get("message", ""))),
                     policy=obj.get("policy"), attempts=int(obj.get("attempts") or 1))


def decode_result(body: Any) -> JobResult:
    """A JobResult from a reply body; raises JobDecodeError naming the field."""
    return result_from_plain(_unpack(body))


def encode_event(job_id: str, event: JobEvent, **fields: Any) -> bytes:
    """Body of a progress event: ``{v, job_id, event, time, ...fields}``."""
    obj = {"v": JOB_PROTOCOL_VERSION, "job_id": job_id, "event": str(event), "time": time.time(),
           **finite_plain(fields)}
    body: bytes = msgpack.packb(obj, use_bin_type=True)
    return body


def decode_event(body: Any) -> dict[str, Any]:
    """A progress event as a plain map (``job_id`` and ``event`` checked); raises JobDecodeError."""
    obj = _unpack(body)
    if not isinstance(obj.get("job_id"), str) or obj.get("event") not in tuple(JobEvent):
        raise JobDecodeError("event", f"event: expected one of {[str(e) for e in JobEvent]}, got "
                                      f"{describe(obj.get('event'))}")
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
    command = obj.get("command", MISSING)
    if command not in CONTROL_COMMANDS:
        raise JobDecodeError("command", f"command: expected one of {list(CONTROL_COMMANDS)}, got "
                                        f"{describe(command)}")
    job_id = check_job_id(obj.get("job_id", MISSING), MAX_JOB_ID_LENGTH)
    reason = obj.get("reason") or ""
    if not isinstance(reason, str):
        raise JobDecodeError("reason", f"reason: expected nil or a string, got {describe(reason)}", job_id)
    return ControlMessage(command=command, job_id=job_id, reason=reason[:500])
