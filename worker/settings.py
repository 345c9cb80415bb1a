"""Typed settings of ``maze-worker``, built from the composed config and checked before anything starts.

Every invalid value raises ConfigError naming its key (``broker.shards: expected an integer >= 1, got 0``), so
the CLI can print one clear line instead of failing later inside the service loop.
"""

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from maze_engine.core.errors import ConfigError
from worker.settings_values import boolean as _boolean
from worker.settings_values import choice as _choice
from worker.settings_values import integer as _integer
from worker.settings_values import number as _number
from worker.settings_values import optional_string as _optional_string
from worker.settings_values import plain as _plain
from worker.settings_values import section as _section
from worker.settings_values import string as _string
from worker.wire import topology
from worker.wire.topology import mask_url

DEFAULT_URL = topology.DEFAULT_AMQP_URL


@dataclass(frozen=True)
class TLSSettings:
    """TLS options for ``amqps://`` URLs; without them the system's trusted CAs are used."""

    ca_file: str | None = None
    """PEM file of the CA that signed the broker's certificate."""
    cert_file: str | None = None
    """Client certificate (PEM) for brokers that authenticate clients by certificate."""
    key_file: str | None = None
    """Private key of ``cert_file``."""
    verify: bool = True
    """Check the broker's certificate and host name; turn off only for a test broker."""


@dataclass(frozen=True)
class BrokerSettings:
    """Where the broker is and how the worker's exchange and queues are named."""

    url: str = DEFAULT_URL
    """amqp:// or amqps:// URL, credentials included (never logged)."""
    prefix: str = "maze"
    """Names: ``<prefix>.states`` exchange, ``<prefix>.states.NN`` shard queues, ``<prefix>.dead``."""
    shards: int = 16
    """Number of shard queues; every worker and producer of one prefix must agree on it."""
    prefetch: int = 1024
    """Unacknowledged deliveries the broker may push ahead; the batch is drawn from these."""
    heartbeat_s: int = 5
    """AMQP heartbeat; a silent peer is detected after about twice this (the broker hands the shards of a
    worker on a lost node to its stand-bys only once it notices the dead connection)."""
    tls: TLSSettings = field(default_factory=TLSSettings)


@dataclass(frozen=True)
class EpisodeSettings:
    """Limits on the episodes (one AgentDeployment each) a worker holds."""

    idle_timeout_s: float = 600.0
    """An episode without a state for this long is closed (statistics flushed)."""
    max_open: int = 10_000
    """A new episode beyond this many open ones is refused with ``overloaded``."""
    replay_window: int = 8
    """Replies kept per episode, so a redelivered state gets the same reply again instead of a second step."""
    on_lost: str = "resume"
    """An episode whose state was lost with a crashed worker: ``resume`` it from its current state (reply
    flagged ``resumed``) or answer ``error`` (``episode_lost``)."""
    max_history_bytes: int = 8 * 1024 * 1024
    """State bytes an episode records for a hand-off; past it the history is dropped (bounding memory), and
    the episode stays on this worker until it ends (a hand-off makes it lost). Keep a record well under the
    broker's message size limit (16 MiB in deploy/rabbitmq): a larger one cannot be handed over."""


ON_LOST_CHOICES = ("resume", "error")


@dataclass(frozen=True)
class BatchSettings:
    """How many arrived states are stepped together (the batch size adapts below this to the load)."""

    max_size: int = 256


@dataclass(frozen=True)
class MetricsSettings:
    """Prometheus metrics at ``/metrics`` and health at ``/healthz``."""

    port: int = 0
    """0 turns the endpoint off."""
    host: str = "0.0.0.0"


@dataclass(frozen=True)
class ReconnectSettings:
    """Capped exponential backoff between connection attempts."""

    initial_backoff_s: float = 0.5
    max_backoff_s: float = 30.0
    healthy_after_s: float = 30.0
    """A connection that lived this long resets the backoff to ``initial_backoff_s``."""


@dataclass(frozen=True)
class ClusterSettings:
    """How agent workers of one prefix find each other and split the shards (docs/operations.md)."""

    heartbeat_interval_s: float = 1.0
    """Seconds between a worker's heartbeats on ``<prefix>.workers``."""
    liveness_timeout_s: float = 4.0
    """A worker silent for this long is taken for dead and its shards are given to the others."""


ROLES = ("agent", "jobs", "all")
JOB_KINDS = topology.JOB_KINDS
DEFAULT_ALLOWED_TARGETS = ("maze_engine.", "worker.")
"""Module prefixes of the class paths a job's config may name (``_target_``): this project's packages."""
_TARGET_PREFIX = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*\.?")


@dataclass(frozen=True)
class JobSettings:
    """How a job worker (``role=jobs`` or ``all``) takes and runs training, rollout and evaluate jobs
    (docs/jobs.md)."""

    kinds: tuple[str, ...] = JOB_KINDS
    """Job queues this worker takes jobs from: ``train``, ``rollout``, ``evaluate`` (default: all three)."""
    delivery_limit: int = 3
    """Attempts of a job whose process crashes before it is dead-lettered (the queues' x-delivery-limit)."""
    cancel_grace_s: float = 10.0
    """Seconds between SIGTERM and SIGKILL when a job is cancelled, times out or the worker stops."""
    lease_ttl_s: float = 60.0
    """Lifetime of a running job's lease copy; renewed every third of it, back on its queue when it lapses."""
    poll_interval_s: float = 0.5
    """How often an idle job worker looks for a job."""
    allowed_targets: tuple[str, ...] = DEFAULT_ALLOWED_TARGETS
    """Module prefixes (``maze_engine.``, ``mylib.envs.``) of the class paths a job's config may import and
    call; any other ``_target_`` makes the job ``bad_job`` (docs/jobs.md, "What a job message may ask")."""


SERVING_MODES = ("act", "shadow")


@dataclass(frozen=True)
class ServingSettings:
    """How the worker's answers are used (docs/worker.md, "Shadow mode")."""

    mode: str = "act"
    """``act``: the producer applies the worker's actions; ``shadow``: it acts with its own controller and
    reports ``applied_action``, and the worker's proposals are compared with it (agreement metrics)."""


_MAX_AGE = re.compile(r"[1-9][0-9]{0,8}[YMDhms]")


@dataclass(frozen=True)
class ExperienceSettings:
    """Recording served episodes to the stream ``<prefix>.experience`` (docs/experience.md)."""

    record: bool = False
    """Publish the steps of served episodes (sampled by episode) to the experience stream."""
    sample: float = 1.0
    """Fraction of episodes recorded, decided by a hash of the episode id (the same on every worker)."""
    chunk_steps: int = 1000
    """A long episode is published in records of this many steps, the rest when it ends."""
    max_bytes: int = 10 * 1024 ** 3
    """Retention of the stream by size (``x-max-length-bytes``); oldest segments go first."""
    max_age: str = "7D"
    """Retention by age (``x-max-age``): a number and a unit, Y M D h m or s."""
    backlog: int = 256
    """Records waiting for the publisher thread; beyond it records are dropped (and counted)."""
    policy_name: str = ""
    """The policy name records carry; empty: the published policy's name, else the policy's class name."""


@dataclass(frozen=True)
class WorkerSettings:
    """Everything ``maze-worker`` reads from its config apart from the env, wrappers and policy."""

    broker: BrokerSettings = field(default_factory=BrokerSettings)
    episodes: EpisodeSettings = field(default_factory=EpisodeSettings)
    batch: BatchSettings = field(default_factory=BatchSettings)
    metrics: MetricsSettings = field(default_factory=MetricsSettings)
    reconnect: ReconnectSettings = field(default_factory=ReconnectSettings)
    cluster: ClusterSettings = field(default_factory=ClusterSettings)
    jobs: JobSettings = field(default_factory=JobSettings)
    serving: ServingSettings = field(default_factory=ServingSettings)
    experience: ExperienceSettings = field(default_factory=ExperienceSettings)
    role: str = "agent"
    """``agent`` serves states, ``jobs`` runs jobs, ``all`` does both (two threads, two connections)."""
    artifact_root: str = "artifacts"
    """Shared directory of job outputs, job records and published policies."""
    deterministic: bool = False
    """Ask the policy for its most likely action instead of sampling."""
    stats_interval_s: float = 30.0
    """How often the episode statistics line is logged (0: only at shutdown)."""
    torch_threads: int = 1
    """Intra-op threads of a torch policy; the worker is single-threaded and its batches are small."""

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> "WorkerSettings":
        """Read and check the worker's keys of a composed ``conf_worker`` config (missing keys: defaults)."""
        config = _plain(config)
        broker = _section(config, "broker")
        tls = _section(broker, "tls", "broker.tls")
        episodes = _section(config, "episodes")
        batch = _section(config, "batch")
        metrics = _section(config, "metrics")
        reconnect = _section(config, "reconnect")
        stats = _section(config, "stats")
        cluster = _section(config, "cluster")
        url = _string(broker, "broker.url", DEFAULT_URL)
        check_url(url)
        tls_defaults, episode_defaults, reconnect_defaults, cluster_defaults = \
            TLSSettings(), EpisodeSettings(), ReconnectSettings(), ClusterSettings()
        settings = cls(
            broker=BrokerSettings(
                url=url,
                prefix=_prefix(broker),
                shards=_integer(broker, "broker.shards", BrokerSettings.shards, minimum=1, maximum=999),
                prefetch=_integer(broker, "broker.prefetch", BrokerSettings.prefetch, minimum=1,
                                  maximum=65535),
                heartbeat_s=_integer(broker, "broker.heartbeat_s", BrokerSettings.heartbeat_s, minimum=0),
                tls=TLSSettings(
                    ca_file=_optional_string(tls, "broker.tls.ca_file"),
                    cert_file=_optional_string(tls, "broker.tls.cert_file"),
                    key_file=_optional_string(tls, "broker.tls.key_file"),
                    verify=_boolean(tls, "broker.tls.verify", tls_defaults.verify),
                ),
            ),
            episodes=EpisodeSettings(
                idle_timeout_s=_number(episodes, "episodes.idle_timeout_s", episode_defaults.idle_timeout_s,
                                       positive=True),
                max_open=_integer(episodes, "episodes.max_open", episode_defaults.max_open, minimum=1),
                replay_window=_integer(episodes, "episodes.replay_window", episode_defaults.replay_window,
                                       minimum=1),
                on_lost=_choice(episodes, "episodes.on_lost", episode_defaults.on_lost, ON_LOST_CHOICES),
                max_history_bytes=_integer(episodes, "episodes.max_history_bytes",
                                           episode_defaults.max_history_bytes, minimum=0),
            ),
            batch=BatchSettings(
                max_size=_integer(batch, "batch.max_size", BatchSettings.max_size, minimum=1)),
            metrics=MetricsSettings(
                port=_integer(metrics, "metrics.port", MetricsSettings.port, minimum=0, maximum=65535),
                host=_string(metrics, "metrics.host", MetricsSettings.host),
            ),
            reconnect=ReconnectSettings(
                initial_backoff_s=_number(reconnect, "reconnect.initial_backoff_s",
                                          reconnect_defaults.initial_backoff_s, positive=True),
                max_backoff_s=_number(reconnect, "reconnect.max_backoff_s", reconnect_defaults.max_backoff_s,
                                      positive=True),
                healthy_after_s=_number(reconnect, "reconnect.healthy_after_s",
                                        reconnect_defaults.healthy_after_s, positive=True),
            ),
            cluster=ClusterSettings(
                heartbeat_interval_s=_number(cluster, "cluster.heartbeat_interval_s",
                                             cluster_defaults.heartbeat_interval_s, positive=True),
                liveness_timeout_s=_number(cluster, "cluster.liveness_timeout_s",
                                           cluster_defaults.liveness_timeout_s, positive=True),
            ),
            deterministic=_boolean(config, "deterministic", cls.deterministic),
            stats_interval_s=_number(stats, "stats.interval_s", cls.stats_interval_s),
            torch_threads=_integer(config, "torch_threads", cls.torch_threads, minimum=1, maximum=256),
            jobs=_job_settings(_section(config, "jobs")),
            serving=ServingSettings(mode=_choice(_section(config, "serving"), "serving.mode",
                                                 ServingSettings.mode, SERVING_MODES)),
            experience=_experience_settings(_section(config, "experience")),
            role=_role(config),
            artifact_root=_string(config, "artifact_root", cls.artifact_root),
        )
        beat = settings.cluster
        if beat.liveness_timeout_s < 2 * beat.heartbeat_interval_s:
            raise ConfigError(f"cluster.liveness_timeout_s: expected at least twice "
                              f"cluster.heartbeat_interval_s ({2 * beat.heartbeat_interval_s:g}), "
                              f"got {beat.liveness_timeout_s:g}")
        backoff = settings.reconnect
        if backoff.max_backoff_s < backoff.initial_backoff_s:
            raise ConfigError(f"reconnect.max_backoff_s: expected a value >= reconnect.initial_backoff_s "
                              f"({backoff.initial_backoff_s}), got {backoff.max_backoff_s}")
        return settings


def _role(config: Mapping[str, Any]) -> str:
    value = config.get("role", "agent")
    if value not in ROLES:
        raise ConfigError(f"role: expected one of {', '.join(ROLES)}, got {type(value).__name__} {value!r}")
    return str(value)


def _job_settings(jobs: Mapping[str, Any]) -> JobSettings:
    kinds = jobs.get("kinds", list(JOB_KINDS))
    if (not isinstance(kinds, list | tuple) or not kinds or any(kind not in JOB_KINDS for kind in kinds)
            or len(set(kinds)) != len(kinds)):
        raise ConfigError(f"jobs.kinds: expected a non-empty list of distinct kinds from {list(JOB_KINDS)}, "
                          f"got {kinds!r}")
    defaults = JobSettings()
    settings = JobSettings(
        kinds=tuple(str(kind) for kind in kinds),
        delivery_limit=_integer(jobs, "jobs.delivery_limit", defaults.delivery_limit, minimum=1, maximum=100),
        cancel_grace_s=_number(jobs, "jobs.cancel_grace_s", defaults.cancel_grace_s, positive=True),
        lease_ttl_s=_number(jobs, "jobs.lease_ttl_s", defaults.lease_ttl_s, positive=True),
        poll_interval_s=_number(jobs, "jobs.poll_interval_s", defaults.poll_interval_s, positive=True),
        allowed_targets=_target_prefixes(jobs.get("allowed_targets", list(DEFAULT_ALLOWED_TARGETS))),
    )
    if settings.lease_ttl_s < 3:
        raise ConfigError(f"jobs.lease_ttl_s: expected at least 3 seconds (it is renewed every third), "
                          f"got {settings.lease_ttl_s:g}")
    return settings


def _experience_settings(experience: Mapping[str, Any]) -> ExperienceSettings:
    defaults = ExperienceSettings()
    sample = experience.get("sample", defaults.sample)
    if isinstance(sample, bool) or not isinstance(sample, int | float) or not 0 <= sample <= 1:
        raise ConfigError(f"experience.sample: expected a fraction in [0, 1], got {type(sample).__name__} "
                          f"{sample!r}")
    max_age = _string(experience, "experience.max_age", defaults.max_age)
    if not _MAX_AGE.fullmatch(max_age):
        raise ConfigError(f"experience.max_age: expected a number and a unit (Y, M, D, h, m or s) such as 7D "
                          f"or 12h, got {max_age!r}")
    name = experience.get("policy_name", defaults.policy_name)
    if not isinstance(name, str):
        raise ConfigError(f"experience.policy_name: expected a string, got {type(name).__name__} {name!r}")
    return ExperienceSettings(
        record=_boolean(experience, "experience.record", defaults.record), sample=float(sample),
        chunk_steps=_integer(experience, "experience.chunk_steps", defaults.chunk_steps, minimum=1),
        max_bytes=_integer(experience, "experience.max_bytes", defaults.max_bytes, minimum=1),
        max_age=max_age, backlog=_integer(experience, "experience.backlog", defaults.backlog, minimum=1),
        policy_name=name)


def _target_prefixes(value: Any) -> tuple[str, ...]:
    if (not isinstance(value, list | tuple) or not value
            or not all(isinstance(item, str) and _TARGET_PREFIX.fullmatch(item) for item in value)):
        raise ConfigError("jobs.allowed_targets: expected a non-empty list of module prefixes such as "
                          f"[maze_engine., worker.], got {type(value).__name__} {value!r}")
    return tuple(value)


def check_url(url: str, key: str = "broker.url") -> None:
    """Raise ConfigError unless ``url`` is an amqp:// or amqps:// URL with a host."""
    parts = urlsplit(url)
    if parts.scheme not in ("amqp", "amqps"):
        raise ConfigError(f"{key}: expected an amqp:// or amqps:// URL, got {mask_url(url)!r}")
    try:
        parts.port  # noqa: B018 - parsing the port raises on a malformed one
    except ValueError as err:
        raise ConfigError(f"{key}: expected a numeric port, got {mask_url(url)!r}") from err
    if not parts.hostname:
        raise ConfigError(f"{key}: expected a host name, got {mask_url(url)!r}")


def _prefix(broker: Mapping[str, Any]) -> str:
    prefix = _string(broker, "broker.prefix", BrokerSettings.prefix)
    try:
        topology.states_exchange(prefix)
    except ValueError as err:
        raise ConfigError(f"broker.{err}") from err
    return prefix
