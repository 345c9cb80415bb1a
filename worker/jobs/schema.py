"""Job messages v1 as values: the job a client submits, its final result, progress events, control commands.

Every message is a msgpack map (docs/protocol.md, "Jobs"). The dataclasses here are frozen and carry no
wire logic beyond ``JobResult.to_plain``; ``worker.jobs.codec`` turns bytes into them and back.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

JOB_PROTOCOL_VERSION = 1
MAX_JOB_ID_LENGTH = 128
MAX_SUBMITTED_JOB_ID_LENGTH = 100
"""Submitted ids leave room for the suffix of chunk ids (``<id>_chunk-3-of-8``)."""
MAX_OVERRIDES = 200
MAX_CHUNKS = 1000

JOB_ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*")
"""A job id names a directory and sits in routing keys: no dots, slashes or spaces."""
CONFIG_PATTERN = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_-]{0,63}")
POLICY_NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
"""A published policy's name becomes a directory (``<root>/policies/<name>``): it starts with a letter or
digit, so it is never ``.`` or ``..``."""
EVALUATION_METHODS = ("wis", "dr")
MAX_BOOTSTRAP = 10_000
"""Resamples of an evaluate job's intervals: a few thousand settle them; more only keeps a worker busy."""
MAX_FQE_STEPS = 100_000
MAX_SEED = 2**32 - 1


class JobKind(StrEnum):
    """What a job does."""

    TRAIN = "train"
    """A training run (``maze-run -cn conf_train ...``)."""
    ROLLOUT = "rollout"
    """A rollout (``maze-run ...`` with the rollout config)."""
    EVALUATE = "evaluate"
    """Off-policy evaluation of a published policy (as ``maze-worker experience evaluate``); no config."""


DEFAULT_CONFIGS = {JobKind.TRAIN: "conf_train", JobKind.ROLLOUT: "conf_rollout"}
"""The config a job composes when it names none (an evaluate job composes none)."""


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
    DATA = "data"
    """An evaluate job's data or policy refuses an estimate (no propensities, actions the policy never takes,
    a stream without episodes): deterministic, never retried."""


@dataclass(frozen=True)
class ChunkOf:
    """Marks a job as chunk ``index`` (0-based) of ``count`` of the distributed rollout ``parent``."""

    parent: str
    index: int
    count: int


@dataclass(frozen=True)
class EvaluationSpec:
    """What an evaluate job estimates, checked (``worker.jobs.evaluation_spec``); the defaults are
    ``maze-worker experience evaluate``'s (docs/evaluation.md)."""

    policy: str
    """``published:NAME@VERSION``, or ``published:NAME`` (the latest version), under the artifact root."""
    dataset: str
    """A Minari dataset (a path inside the artifact root, or an id under ``<root>/datasets/``), or
    ``stream:PREFIX``."""
    gamma: float = 1.0
    """Discount, in (0, 1]; 1 estimates the plain episode return."""
    bootstrap: int = 500
    """Bootstrap resamples of the intervals, in [2, MAX_BOOTSTRAP]."""
    seed: int = 0
    """Seeds the resamples and the Q-function fit, in [0, MAX_SEED]."""
    level: float = 0.95
    """Coverage of the intervals, in (0, 1)."""
    methods: tuple[str, ...] = EVALUATION_METHODS
    """Estimators to run, a non-empty subset of ``wis`` and ``dr``."""
    epsilon: float | None = None
    """Floor of the policy's probability of logged actions, in (0, 1); None: refuse actions it never takes."""
    fqe_steps: int | None = None
    """Gradient steps of each Q-function fit (None: ``FQEConfig``'s default)."""


@dataclass(frozen=True)
class JobMessage:
    """A job as submitted (decoded, or about to be encoded)."""

    job_id: str
    """Client-chosen id; also the idempotency key: a finished id answers with its stored result."""
    kind: JobKind
    config: str
    """Primary config name, ``conf_train`` / ``conf_rollout`` unless set; empty for an evaluate job."""
    overrides: tuple[str, ...] = ()
    """Hydra overrides, exactly as ``maze-run`` takes them."""
    time_limit_s: float | None = None
    publish_policy: str | None = None
    """Training only: publish the trained policy under this name when the job finishes."""
    force_publish: bool = False
    """With ``publish_policy``: publish even when the run's best evaluation return is worse than the one
    recorded for the currently published version (which is kept otherwise)."""
    canary: float | None = None
    """With ``publish_policy``: release the published version as a canary to this share of new episodes
    (strictly between 0 and 1) instead of serving it to all of them."""
    canary_auto: bool = False
    """With ``canary``: the automatic gate promotes or rolls the canary back (docs/worker.md)."""
    canary_min_episodes: int | None = None
    """With ``canary_auto``: finished episodes on each side before the gate decides (default 50)."""
    shadow: bool = False
    """With ``publish_policy``: run the published version in shadow beside the stable one instead of serving
    it (docs/worker.md, "Shadow candidates")."""
    chunks: int | None = None
    """Rollout only: split into this many chunk jobs run by any job worker, merged into one result."""
    chunk_of: ChunkOf | None = None
    """Set on the chunk jobs a worker creates from a split rollout."""
    evaluation: EvaluationSpec | None = None
    """Evaluate jobs only (and always): what to estimate."""
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
