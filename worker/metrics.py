"""Prometheus metrics of the worker and its health endpoint.

Metric names are fixed (docs/worker.md lists them). Each WorkerMetrics has its own registry, so several
workers in one process (tests) never share counters. ``MetricsServer`` serves ``/metrics`` and ``/healthz``
(200 while connected and consuming, 503 otherwise) from a daemon thread.
"""

import logging
import threading
from collections.abc import Iterable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Summary,
    generate_latest,
)

logger = logging.getLogger(__name__)

BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
HANDOFF_BUCKETS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
LATENCY_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 2.5)


def version_label(policy_version: int | None) -> str:
    """The ``policy_version`` label: the published version, ``none`` for an unpublished policy."""
    return "none" if policy_version is None else str(policy_version)


class WorkerMetrics:
    """The worker's counters, gauges and histograms, plus the health flags the endpoint reports."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.states = Counter("maze_worker_states", "States handled (answered or dead-lettered)",
                              registry=self.registry)
        self.errors = Counter("maze_worker_errors", "Error replies by code", ["code"], registry=self.registry)
        self.dead_letters = Counter("maze_worker_dead_letters", "Messages sent to <prefix>.dead by reason",
                                    ["reason"], registry=self.registry)
        self.open_episodes = Gauge("maze_worker_open_episodes", "Episodes this worker holds",
                                   registry=self.registry)
        self.episodes_closed = Counter("maze_worker_episodes_closed", "Episodes closed, by why",
                                       ["reason"], registry=self.registry)
        self.batch_size = Histogram("maze_worker_batch_size", "States stepped together in one batch",
                                    buckets=BATCH_BUCKETS, registry=self.registry)
        self.latency = Histogram("maze_worker_handling_seconds",
                                 "From delivery to the reply being handed to the broker",
                                 buckets=LATENCY_BUCKETS, registry=self.registry)
        self.reconnects = Counter("maze_worker_reconnects", "Connections re-established after a loss",
                                  registry=self.registry)
        self.connected = Gauge("maze_worker_connected", "1 while connected and consuming",
                               registry=self.registry)
        self.owned_shards = Gauge("maze_worker_owned_shards", "Shards assigned to this worker",
                                  registry=self.registry)
        self.live_workers = Gauge("maze_worker_live_workers", "Live agent workers of the prefix",
                                  registry=self.registry)
        self.handoffs = Counter("maze_worker_handoffs", "Shard hand-offs with episodes, by direction",
                                ["direction"], registry=self.registry)
        self.episodes_handed_off = Counter("maze_worker_episodes_handed_off",
                                           "Episodes moved with their state, by direction (in, out)",
                                           ["direction"], registry=self.registry)
        self.takeover_seconds = Histogram("maze_worker_takeover_seconds",
                                          "Becoming a shard's active consumer (hand-off import)",
                                          buckets=HANDOFF_BUCKETS, registry=self.registry)
        self.handoff_seconds = Histogram("maze_worker_handoff_seconds",
                                         "Handing a shard's episodes over: records out, consumer cancelled",
                                         buckets=HANDOFF_BUCKETS, registry=self.registry)
        self.experience_records = Counter("maze_worker_experience_records",
                                          "Experience records published (with the broker's confirm)",
                                          registry=self.registry)
        self.experience_steps = Counter("maze_worker_experience_steps", "Steps in the published records",
                                        registry=self.registry)
        self.experience_dropped = Counter("maze_worker_experience_records_dropped",
                                          "Experience records not published, by reason", ["reason"],
                                          registry=self.registry)
        self.experience_backlog = Gauge("maze_worker_experience_backlog",
                                        "Experience records waiting for the publisher thread",
                                        registry=self.registry)
        self.applied_actions = Counter("maze_worker_applied_actions",
                                       "Reported applied actions compared with the worker's proposal, by "
                                       "policy version and agreed (true, false; unreported in shadow mode)",
                                       ["policy_version", "agreed"], registry=self.registry)
        self.shadow_agreement = Gauge("maze_worker_shadow_agreement",
                                      "Share of compared applied actions equal to the proposal, by version",
                                      ["policy_version"], registry=self.registry)
        self.version_episodes = Counter("maze_worker_version_episodes",
                                        "Episodes finished (done) with statistics, by policy version",
                                        ["policy_version"], registry=self.registry)
        self.version_return = Summary("maze_worker_version_episode_return", "Episode returns by version",
                                      ["policy_version"], registry=self.registry)
        self.version_length = Summary("maze_worker_version_episode_length", "Episode lengths by version",
                                      ["policy_version"], registry=self.registry)
        self.version_errors = Counter("maze_worker_version_errors", "Error replies by version and code",
                                      ["policy_version", "code"], registry=self.registry)
        self.version_latency = Histogram("maze_worker_version_handling_seconds",
                                         "From delivery to the reply being handed to the broker, by policy "
                                         "version", ["policy_version"], buckets=LATENCY_BUCKETS,
                                         registry=self.registry)
        self._agreement: dict[str, list[int]] = {}
        self._healthy = False

    def count_episode(self, policy_version: int | None, episode_return: float, length: int) -> None:
        """A finished episode's return and length, under its policy version."""
        version = version_label(policy_version)
        self.version_episodes.labels(version).inc()
        self.version_return.labels(version).observe(episode_return)
        self.version_length.labels(version).observe(length)

    def observe_version_latencies(self, versions: Iterable[int | None], seconds: Iterable[float]) -> None:
        """Handling latencies, each under the policy version of its state's episode."""
        children: dict[int | None, Any] = {}
        for version, value in zip(versions, seconds, strict=True):
            child = children.get(version)
            if child is None:
                child = children[version] = self.version_latency.labels(version_label(version))
            child.observe(value)

    def count_version_errors(self, versions: Iterable[int | None], codes: Iterable[str | None]) -> None:
        for version, code in zip(versions, codes, strict=True):
            if code is not None:
                self.version_errors.labels(version_label(version), code).inc()

    def count_applied(self, policy_version: int | None, agreed: bool | None) -> None:
        """One reported applied action compared (``agreed``), or one not reported (None, shadow mode)."""
        version = version_label(policy_version)
        self.applied_actions.labels(version, "unreported" if agreed is None else str(agreed).lower()).inc()
        if agreed is None:
            return
        counts = self._agreement.setdefault(version, [0, 0])
        counts[0] += agreed
        counts[1] += 1
        self.shadow_agreement.labels(version).set(counts[0] / counts[1])

    def observe_latencies(self, seconds: Iterable[float]) -> None:
        for value in seconds:
            self.latency.observe(value)

    def count_errors(self, codes: Iterable[str]) -> None:
        for code in codes:
            self.errors.labels(code).inc()

    def set_healthy(self, healthy: bool) -> None:
        """Called by the service: True once consuming, False when the connection is lost or stopping."""
        self._healthy = healthy
        self.connected.set(1 if healthy else 0)

    @property
    def healthy(self) -> bool:
        return self._healthy

    def render(self) -> bytes:
        """The metrics in Prometheus' text format."""
        return generate_latest(self.registry)


class MetricsServer:
    """Serves ``/metrics`` and ``/healthz`` for ``metrics`` on ``host:port`` (port 0 picks a free one)."""

    def __init__(self, metrics: WorkerMetrics, host: str, port: int) -> None:
        self.metrics = metrics
        handler = _handler_for(metrics)
        self._server = ThreadingHTTPServer((host, port), handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="maze-worker-metrics",
                                        daemon=True)

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def start(self) -> "MetricsServer":
        self._thread.start()
        logger.info("metrics on http://%s:%d/metrics, health on /healthz", *self._server.server_address[:2])
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


def _handler_for(metrics: WorkerMetrics) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - the name http.server dispatches to
            path = self.path.split("?", 1)[0]
            if path == "/metrics":
                self._send(200, metrics.render(), CONTENT_TYPE_LATEST)
            elif path == "/healthz":
                healthy = metrics.healthy
                self._send(200 if healthy else 503, b"ok\n" if healthy else b"not consuming\n", "text/plain")
            else:
                self._send(404, b"not found: try /metrics or /healthz\n", "text/plain")

        def _send(self, status: int, body: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - http.server's signature
            # Scrapes every few seconds would drown the worker's own log.
            logger.debug(format, *args)

    return Handler
