"""The experience record: one msgpack map per chunk of an episode's steps, in columns (docs/experience.md).

A record holds the steps of one *run* (an episode as recorded: it keeps its run id across hand-offs between
workers; a crash ends it, and a resumed episode starts a new run) in column form: one ndarray per field and
step (ndarray extension 42 of docs/protocol.md, section 3), observations and actions as maps of columns
keyed like the policy's spaces. Columns make both ends cheap: the worker stacks a chunk once, readers
concatenate arrays instead of walking steps. ``encode_record`` and ``decode_record`` are the reference
codec; decoding checks the fields and raises ``RecordError`` naming the one that is wrong.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import msgpack
import numpy as np

from worker.errors import WorkerError
from worker.wire.ndarray_codec import NDARRAY_EXT_TYPE, NdarrayCodecError, decode_ndarray, encode_ndarray

RECORD_VERSION = 1
RECORD_KIND = "maze.experience"
STEP_COLUMNS = ("seq", "observation", "action", "log_prob", "applied_action", "applied_reported", "reward",
                "terminated", "truncated", "time")
"""The per-step columns of a record, each holding ``steps`` entries."""
CONTENT_TYPE = "application/msgpack"


class RecordError(WorkerError, ValueError):
    """A record (or a hand-off of recorded steps) that cannot be encoded or decoded; says which field."""


@dataclass
class ExperienceRecord:
    """One chunk of a run: who recorded what, and the columns of its steps (None when it has no steps)."""

    run: str
    """Id of the run (hex): every chunk of one coherently recorded episode carries it."""
    episode: str
    chunk: int
    """0, 1, 2, ... within the run, across workers."""
    final: bool
    """The run's last chunk: the episode ended (``end`` says how) or was closed."""
    worker: str
    """The worker that published this chunk."""
    policy_name: str
    policy_version: int | None
    mode: str
    """``act`` or ``shadow`` (``serving.mode`` of the publishing worker)."""
    first_seq: int
    """The seq of the first step in this chunk (the chunks of a run follow each other without gaps)."""
    steps: int
    columns: dict[str, Any] | None
    """``STEP_COLUMNS`` -> column; maps of columns for observation, action and applied_action."""
    end: str | None = None
    """In the final chunk: ``done``, ``truncated`` (ended by the producer) or why it was closed:
    ``idle``, ``error``, ``shutdown``, ``not_handed_over``."""
    final_observation: Any = None
    """In the final chunk: the observation after the last step (of the done state; of the last state seen
    when the episode was closed without done), None when there is none."""
    resumed_at: int | None = None
    """The seq at which the episode was resumed after a crash (this run began there), else None."""
    published: float = 0.0
    """Unix time the record was encoded for publishing."""
    shadow_version: int | None = None
    """The version of a shadow candidate that acted beside the policy on this run's steps (its columns
    ``shadow_action`` and ``shadow_log_prob``), else None."""


# ---------------------------------------------------------------------------------------------- columns

def stack(values: Sequence[Any]) -> Any:
    """Per-step values (maps, tuples, arrays, numbers) as columns: maps and tuples of ndarrays with a
    leading step dimension."""
    first = values[0]
    if isinstance(first, Mapping):
        return {key: stack([value[key] for value in values]) for key in first}
    if isinstance(first, tuple):
        return [stack([value[index] for value in values]) for index in range(len(first))]
    return np.asarray(values)


def unstack(column: Any, count: int) -> list[Any]:
    """The inverse of ``stack``: one value per step (tuples come back from lists of columns)."""
    if isinstance(column, Mapping):
        parts = {key: unstack(value, count) for key, value in column.items()}
        return [{key: part[index] for key, part in parts.items()} for index in range(count)]
    if isinstance(column, list):
        parts_list = [unstack(value, count) for value in column]
        return [tuple(part[index] for part in parts_list) for index in range(count)]
    return list(column)


def concatenate(columns: Sequence[Any]) -> Any:
    """Columns of consecutive chunks joined along the step dimension."""
    first = columns[0]
    if isinstance(first, Mapping):
        return {key: concatenate([column[key] for column in columns]) for key in first}
    if isinstance(first, list):
        return [concatenate([column[index] for column in columns]) for index in range(len(first))]
    return np.concatenate(columns)


# ------------------------------------------------------------------------------------------------ codec

def _default(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return encode_ndarray(value)
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, tuple):
        return list(value)
    if isinstance(value, Mapping):
        return dict(value)
    raise TypeError(f"cannot encode {type(value).__name__}")


def _ext_hook(code: int, data: bytes) -> Any:
    if code == NDARRAY_EXT_TYPE:
        return decode_ndarray(data)
    raise RecordError(f"body: unknown msgpack extension type {code}")


def pack(value: Any) -> bytes:
    """msgpack with ndarrays as extension 42; RecordError for a value it cannot carry."""
    try:
        return msgpack.packb(value, default=_default, use_bin_type=True)
    except (TypeError, ValueError, OverflowError, NdarrayCodecError) as err:
        raise RecordError(f"body: cannot encode the record ({err})") from err


def unpack(body: bytes) -> Any:
    try:
        return msgpack.unpackb(body, raw=False, ext_hook=_ext_hook, strict_map_key=False)
    except RecordError:
        raise
    except Exception as err:  # noqa: BLE001 - msgpack raises several unrelated types for corrupt input
        raise RecordError(f"body: expected a msgpack map, got undecodable bytes ({err})") from None


def encode_record(record: ExperienceRecord) -> bytes:
    """The record as published on ``<prefix>.experience``."""
    return pack({"v": RECORD_VERSION, "kind": RECORD_KIND, "run": record.run, "episode": record.episode,
                 "chunk": record.chunk, "final": record.final, "end": record.end, "worker": record.worker,
                 "policy": {"name": record.policy_name, "version": record.policy_version},
                 "mode": record.mode, "resumed_at": record.resumed_at, "first_seq": record.first_seq,
                 "steps": record.steps, "columns": record.columns,
                 "final_observation": record.final_observation, "published": record.published,
                 "shadow_version": record.shadow_version})


def decode_record(body: bytes) -> ExperienceRecord:
    """Decode and check a record; RecordError names the first field that is wrong."""
    obj = unpack(body)
    if type(obj) is not dict or obj.get("kind") != RECORD_KIND:
        raise RecordError(f"kind: expected {RECORD_KIND!r}, got {type(obj).__name__}")
    if obj.get("v") != RECORD_VERSION:
        raise RecordError(f"v: expected record version {RECORD_VERSION}, got {obj.get('v')!r:.40}")
    policy = obj.get("policy")
    if type(policy) is not dict:
        raise RecordError("policy: expected a map {name, version}")
    record = ExperienceRecord(
        run=_typed(obj, "run", str), episode=_typed(obj, "episode", str), chunk=_typed(obj, "chunk", int),
        final=_typed(obj, "final", bool), worker=_typed(obj, "worker", str),
        policy_name=_typed(policy, "name", str, "policy.name"),
        policy_version=_typed(policy, "version", int, "policy.version", optional=True),
        mode=_typed(obj, "mode", str), first_seq=_typed(obj, "first_seq", int),
        steps=_typed(obj, "steps", int), columns=_typed(obj, "columns", dict, optional=True),
        end=_typed(obj, "end", str, optional=True), final_observation=obj.get("final_observation"),
        resumed_at=_typed(obj, "resumed_at", int, optional=True),
        published=float(_typed(obj, "published", (int, float))),
        shadow_version=_typed(obj, "shadow_version", int, optional=True))
    if record.steps < 0 or (record.steps > 0) != (record.columns is not None):
        raise RecordError(f"columns: expected columns exactly when steps > 0, got steps {record.steps}")
    if record.columns is not None:
        missing = [name for name in STEP_COLUMNS if name not in record.columns]
        if missing:
            raise RecordError(f"columns.{missing[0]}: expected a column of {record.steps} steps, got none")
    return record


def _typed(obj: Mapping[str, Any], key: str, kind: Any, field: str | None = None,
           optional: bool = False) -> Any:
    value = obj.get(key)
    if value is None and optional:
        return None
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise RecordError(f"{field or key}: expected {getattr(kind, '__name__', kind)}"
                          f"{' or nil' if optional else ''}, got {type(value).__name__}")
    return value
