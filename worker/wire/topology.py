"""Broker names and arguments of the worker's topology, as small pure functions (no pika here).

Everything the worker and its producers agree on about *where* messages go lives in this module: exchange and
queue names derived from a prefix, the shard queues' arguments and limits, the dead-letter headers, and the
broker URL defaults (with credential masking for logs). See docs/protocol.md for the picture and
docs/operations.md ("Limits") for why the limits are what they are.
"""

import os
import re
from enum import StrEnum
from typing import Any
from urllib.parse import urlsplit, urlunsplit

# The largest state a worker accepts, re-exported here: the broker limits below are sized from it.
from worker.wire.protocol import MAX_STATE_BYTES as MAX_STATE_BYTES

DEFAULT_PREFIX = "maze"
DEFAULT_SHARDS = 16
SHARD_BINDING_WEIGHT = "1"
"""Routing key of each shard binding: x-consistent-hash reads it as the shard's weight on the hash ring."""

DEAD_REASON_HEADER = "x-maze-dead-reason"
"""Header of a dead-lettered message: why it was dead-lettered (a ``DeadReason`` value)."""
DEAD_FIELD_HEADER = "x-maze-dead-field"
"""Header of a dead-lettered message: the offending property or field ("reply_to", "body", "seq", ...)."""
DEAD_DETAIL_HEADER = "x-maze-dead-detail"
"""Header of a dead-lettered message: a human-readable explanation."""

AMQP_URL_ENV = "MAZE_AMQP_URL"
DEFAULT_AMQP_URL = "amqp://guest:guest@localhost:5672/%2F"

_PREFIX_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")
_TOKEN_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")


def _checked(prefix: str) -> str:
    if not isinstance(prefix, str) or not _PREFIX_PATTERN.fullmatch(prefix) or prefix.startswith("amq."):
        raise ValueError(f"prefix: expected 1-100 letters, digits, '.', '_', '-', starting with a letter or "
                         f"digit and not with 'amq.' (reserved by the broker), got {prefix!r}")
    return prefix


# ------------------------------------------------------------------------------------------------- states

def states_exchange(prefix: str) -> str:
    """The exchange producers publish states to (routing key = episode id)."""
    return f"{_checked(prefix)}.states"


def states_exchange_type() -> str:
    """Consistent hashing on the routing key sends every state of one episode to the same shard queue."""
    return "x-consistent-hash"


def _shard_width(shards: int) -> int:
    return max(2, len(str(shards - 1)))


def shard_queue(prefix: str, index: int, shards: int | None = None) -> str:
    """Name of shard queue ``index``: ``<prefix>.states.NN``, two digits (more past 100 shards).

    Pass ``shards`` when there may be more than 100 of them, so every name has the same width.
    """
    if shards is not None and (type(shards) is not int or shards < 1):
        raise ValueError(f"shards: expected a positive integer, got {shards!r}")
    limit = 100 if shards is None else shards
    if type(index) is not int or not 0 <= index < limit:
        hint = "" if shards is not None else " (pass shards= for more than 100 shards)"
        raise ValueError(f"index: expected an integer in [0, {limit}){hint}, got {index!r}")
    width = _shard_width(limit)
    return f"{states_exchange(prefix)}.{index:0{width}d}"


def shard_queues(prefix: str, shards: int = DEFAULT_SHARDS) -> list[str]:
    """Names of all shard queues, in index order."""
    if type(shards) is not int or shards < 1:
        raise ValueError(f"shards: expected a positive integer, got {shards!r}")
    return [shard_queue(prefix, index, shards) for index in range(shards)]


SHARD_DELIVERY_LIMIT = 20
"""Deliveries of one state a shard queue allows (quorum ``x-delivery-limit``); the worker refuses a state on
its last one (``x-delivery-count`` header), so a message that crashes workers cannot crash the fleet in a
loop. Generous, because passing a shard on and handing it over give deliveries back, which counts too.
The broker is the backstop: a state given back once more than this is dead-lettered to ``<prefix>.dead``
with ``x-first-death-reason: delivery_limit``."""
DELIVERY_COUNT_HEADER = "x-delivery-count"
"""Header a quorum queue sets on a redelivery: how many times the message was delivered before."""

BROKER_MAX_MESSAGE_BYTES = 16 * 1024 * 1024
"""The broker's ``max_message_size`` (deploy/rabbitmq/20-maze.conf): four times ``MAX_STATE_BYTES``, so a
state the worker accepts, and its dead letter, always get through, while bodies of tens of MB are refused at
the door instead of being written to a quorum log. A larger message closes the publishing channel (406
PRECONDITION_FAILED); whoever publishes hand-off records or job messages keeps each one below it."""
SHARD_MAX_BYTES = 64 * 1024 * 1024
"""Bytes of waiting states one shard queue holds (quorum ``x-max-length-bytes``), 16 states of
``MAX_STATE_BYTES`` or hundreds of thousands of small ones; ``broker.shards`` times this bounds what a
prefix's backlog costs the broker."""
SHARD_OVERFLOW = "reject-publish"
"""A full shard refuses new states (``x-overflow``): a producer publishing with confirms gets a nack, and the
states already waiting, other producers' included, stay. ``drop-head`` would silently drop those instead."""
DEAD_LETTER_MAX_BYTES = 256 * 1024 * 1024
"""Bytes ``<prefix>.dead`` holds (``x-max-length-bytes``); past it the oldest dead letters are dropped
(``drop-head``), so a broken producer cannot fill the broker with copies of its messages."""


def shard_queue_arguments(prefix: str) -> dict[str, Any]:
    """Declare arguments of a shard queue: a quorum queue read by one consumer at a time, in order.

    Messages the broker itself dead-letters (rejected without requeue, or given back more than
    ``SHARD_DELIVERY_LIMIT`` times) go to ``<prefix>.dead``; a shard holding ``SHARD_MAX_BYTES`` of waiting
    states refuses more. Changing these arguments changes the declared topology: docs/operations.md says how
    to move an existing prefix over.
    """
    return {
        "x-queue-type": "quorum",
        "x-single-active-consumer": True,
        "x-dead-letter-exchange": dead_letter_exchange(prefix),
        "x-delivery-limit": SHARD_DELIVERY_LIMIT,
        "x-max-length-bytes": SHARD_MAX_BYTES,
        "x-overflow": SHARD_OVERFLOW,
    }


# ----------------------------------------------------------------------------------------------- dead letters

class DeadReason(StrEnum):
    """Values of the ``x-maze-dead-reason`` header."""

    NO_REPLY_TO = "no_reply_to"
    """The message has no ``reply_to`` property, so no reply can be sent."""
    BAD_MESSAGE = "bad_message"
    """The body is not a protocol v1 message (not msgpack, not a map, or a field that cannot be read)."""
    BAD_PROPERTIES = "bad_properties"
    """A property is unusable, e.g. an unsupported ``content_type``."""
    BAD_JOB = "bad_job"
    """A job that cannot run: undecodable, an unknown kind or config, overrides that do not compose."""
    JOB_FAILED = "job_failed"
    """A job that failed on every attempt up to the delivery limit (its child process kept crashing)."""
    POISON = "poison"
    """A state delivered ``SHARD_DELIVERY_LIMIT`` times without being acknowledged (it may crash workers): the
    worker answers ``internal`` and dead-letters it instead of handling it once more."""


def dead_letter_exchange(prefix: str) -> str:
    """Fanout exchange receiving messages that cannot be answered."""
    return f"{_checked(prefix)}.dead"


def dead_letter_exchange_type() -> str:
    """Fanout: dead letters keep their original routing key (the episode id) but all land in one queue."""
    return "fanout"


def dead_letter_queue(prefix: str) -> str:
    """Durable queue holding dead letters for an operator to inspect."""
    return f"{_checked(prefix)}.dead"


def dead_letter_queue_arguments() -> dict[str, Any]:
    """Quorum queue, so dead letters survive a broker restart like the states they came from; it keeps the
    newest ``DEAD_LETTER_MAX_BYTES`` of them."""
    return {"x-queue-type": "quorum", "x-max-length-bytes": DEAD_LETTER_MAX_BYTES, "x-overflow": "drop-head"}


def dead_letter_headers(reason: str, field: str, detail: str = "") -> dict[str, str]:
    """Headers to add when publishing a message to the dead-letter exchange."""
    headers = {DEAD_REASON_HEADER: str(reason), DEAD_FIELD_HEADER: field}
    if detail:
        headers[DEAD_DETAIL_HEADER] = detail
    return headers


# ------------------------------------------------------------------------------------------------------ jobs

def jobs_queue(prefix: str, kind: str) -> str:
    """Queue of the jobs of one ``kind`` (train, rollout, evaluate)."""
    if not isinstance(kind, str) or not _TOKEN_PATTERN.fullmatch(kind):
        raise ValueError(f"kind: expected 1-64 letters, digits, '_' or '-', got {kind!r}")
    return f"{_checked(prefix)}.jobs.{kind}"


JOB_KIND_HEADER = "x-maze-job-kind"
"""Header of a job lease copy: its kind, by which the return exchange routes it back to its job queue."""
JOB_ATTEMPTS_HEADER = "x-maze-job-attempts"
"""Header of a job message: how many times a job worker has started it (absent: never)."""


def jobs_queue_arguments(prefix: str, delivery_limit: int) -> dict[str, Any]:
    """A quorum job queue: after ``delivery_limit`` returned deliveries the broker dead-letters the job."""
    if type(delivery_limit) is not int or delivery_limit < 1:
        raise ValueError(f"delivery_limit: expected an integer >= 1, got {delivery_limit!r}")
    return {
        "x-queue-type": "quorum",
        "x-delivery-limit": delivery_limit,
        "x-dead-letter-exchange": dead_letter_exchange(prefix),
    }


def jobs_return_exchange(prefix: str) -> str:
    """Headers exchange that routes an expired job lease back to the job queue of its kind."""
    return f"{_checked(prefix)}.jobs.return"


def lease_queue(prefix: str, worker_id: str) -> str:
    """A job worker's own lease queue: a copy of the job it runs, which expires back to the job queue."""
    if not isinstance(worker_id, str) or not _TOKEN_PATTERN.fullmatch(worker_id):
        raise ValueError(f"worker_id: expected 1-64 letters, digits, '_' or '-', got {worker_id!r}")
    return f"{_checked(prefix)}.jobs.lease.{worker_id}"


def lease_queue_arguments(prefix: str, ttl_s: float) -> dict[str, Any]:
    """Classic durable queue whose messages expire after ``ttl_s`` into the jobs return exchange.

    The queue itself is deleted once unused for ten lease periods (at least 5 minutes), long after its last
    copy has expired and gone back to its job queue, so the queues of dead workers do not pile up.
    """
    if isinstance(ttl_s, bool) or not isinstance(ttl_s, int | float) or ttl_s <= 0:
        raise ValueError(f"ttl_s: expected a number of seconds > 0, got {ttl_s!r}")
    ttl_ms = max(int(ttl_s * 1000), 1)
    return {
        "x-queue-type": "classic",
        "x-message-ttl": ttl_ms,
        "x-dead-letter-exchange": jobs_return_exchange(prefix),
        "x-expires": max(10 * ttl_ms, 300_000),
    }


def events_exchange_type() -> str:
    """Topic: routing keys ``job.<job_id>.<event>`` let a client follow one job (``job.<id>.*``) or all."""
    return "topic"


def control_exchange_type() -> str:
    """Fanout: every job worker gets every control message on its own exclusive queue."""
    return "fanout"


def policies_exchange_type() -> str:
    """Fanout: every agent worker hears every policy announcement."""
    return "fanout"


def job_event_routing_key(job_id: str, event: str) -> str:
    """``job.<job_id>.<event>`` on the events exchange."""
    return f"job.{job_id}.{event}"


def events_exchange(prefix: str) -> str:
    """Exchange on which workers publish job progress and lifecycle events."""
    return f"{_checked(prefix)}.events"


def control_exchange(prefix: str) -> str:
    """Exchange for control messages to workers (stop, cancel)."""
    return f"{_checked(prefix)}.control"


def policies_exchange(prefix: str) -> str:
    """Exchange announcing newly trained policy versions."""
    return f"{_checked(prefix)}.policies"


# --------------------------------------------------------------------------------- cluster of agent workers

def workers_exchange(prefix: str) -> str:
    """Fanout exchange on which agent workers announce themselves (heartbeats) to each other."""
    return f"{_checked(prefix)}.workers"


def workers_exchange_type() -> str:
    """Fanout: every agent worker hears every heartbeat on its own queue."""
    return "fanout"


def worker_queue(prefix: str, worker_id: str, connection: int = 0) -> str:
    """An agent worker's own heartbeat queue on its ``connection``-th connection (exclusive, auto-delete:
    it goes with its connection). A new name per connection: the broker may hold a dead connection's
    channel, and its exclusive queue, for over a minute, which would lock a reconnect out of the old name."""
    if not isinstance(worker_id, str) or not _TOKEN_PATTERN.fullmatch(worker_id):
        raise ValueError(f"worker_id: expected 1-64 letters, digits, '_' or '-', got {worker_id!r}")
    if type(connection) is not int or connection < 0:
        raise ValueError(f"connection: expected an integer >= 0, got {connection!r}")
    return f"{_checked(prefix)}.workers.{worker_id}.{connection}"


def handoff_queue(prefix: str, index: int, shards: int | None = None) -> str:
    """Queue of shard ``index``'s hand-off records: ``<prefix>.handoff.NN``, numbered like the shards."""
    name = shard_queue(prefix, index, shards)
    return f"{_checked(prefix)}.handoff.{name.rsplit('.', 1)[1]}"


def handoff_queues(prefix: str, shards: int = DEFAULT_SHARDS) -> list[str]:
    """Names of all hand-off queues, in shard order."""
    if type(shards) is not int or shards < 1:
        raise ValueError(f"shards: expected a positive integer, got {shards!r}")
    return [handoff_queue(prefix, index, shards) for index in range(shards)]


def handoff_queue_arguments() -> dict[str, Any]:
    """Quorum: hand-off records (the moving episodes' histories) survive a broker restart."""
    return {"x-queue-type": "quorum"}


def experience_stream(prefix: str) -> str:
    """The stream of recorded experience (docs/experience.md): one record per chunk of an episode."""
    return f"{_checked(prefix)}.experience"


JOB_KINDS = ("train", "rollout", "evaluate")
"""Every job kind has its queue ``<prefix>.jobs.<kind>`` (docs/jobs.md)."""


def amqp_url(url: str | None = None) -> str:
    """The broker URL to use: ``url`` if given, else ``$MAZE_AMQP_URL``, else the local default."""
    return url or os.environ.get(AMQP_URL_ENV) or DEFAULT_AMQP_URL


def mask_url(url: str) -> str:
    """``url`` with its password replaced by ``****``, safe to log or show in errors."""
    try:
        parts = urlsplit(url)
        password, port = parts.password, parts.port
    except ValueError:  # unparsable (e.g. a bad port): show nothing that might hold a secret
        return "<unparsable broker URL>"
    if not password:
        return url
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = f"{parts.username or ''}:****@{host}"
    if port is not None:
        netloc += f":{port}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))
