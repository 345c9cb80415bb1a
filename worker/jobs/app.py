"""Starting job workers: ``maze-worker role=jobs`` (the job service alone) and ``role=all`` (beside the agent
service, on a thread and a connection of its own)."""

from __future__ import annotations

import logging
import threading
from typing import Any

from omegaconf import DictConfig

from worker.jobs.metrics import JobMetrics
from worker.jobs.service import JobService
from worker.settings import WorkerSettings

logger = logging.getLogger(__name__)


def serve_jobs(cfg: DictConfig) -> int:
    """Run the job service for a composed ``conf_worker`` config until SIGTERM or Ctrl-C; the exit code."""
    from worker.broker.agent_transport import TransportError
    from worker.errors import EXIT_CONFIG_ERROR, EXIT_FAILURE, EXIT_OK, ConfigProblem, fail, one_line
    from worker.metrics import MetricsServer, WorkerMetrics
    from worker.signals import stop_on_signals
    from worker.startup import configure_logging, settings_of

    try:
        configure_logging(cfg.get("log_level", "INFO"))
        settings = settings_of(cfg)
    except ConfigProblem as err:
        return fail(str(err), EXIT_CONFIG_ERROR)
    health = WorkerMetrics()
    service = JobService(settings, JobMetrics(health.registry), health=health)
    server = None

    stop_on_signals(service.stop, "stopping; a running job is stopped and put back on its queue")
    try:
        if settings.metrics.port:
            server = MetricsServer(health, settings.metrics.host, settings.metrics.port).start()
        service.run()
    except TransportError as err:
        return fail(str(err), EXIT_FAILURE)
    except OSError as err:
        return fail(one_line(err), EXIT_FAILURE)
    finally:
        if server is not None:
            server.stop()
    logger.info("maze-worker jobs stopped")
    return EXIT_OK


class JobThread:
    """The job service of ``role=all`` on a daemon thread; its metrics join the agent worker's registry."""

    def __init__(self, settings: WorkerSettings, registry: Any = None) -> None:
        self.service = JobService(settings, JobMetrics(registry))
        self.errors: list[BaseException] = []
        self._thread = threading.Thread(target=self._run, name="maze-worker-jobs", daemon=True)

    def _run(self) -> None:
        try:
            self.service.run()
        except BaseException as err:  # noqa: BLE001 - logged; the agent service keeps serving
            logger.error("the job service stopped: %s", err)
            self.errors.append(err)

    def start(self) -> JobThread:
        self._thread.start()
        return self

    def stop(self, timeout: float = 120.0) -> None:
        self.service.stop()
        self._thread.join(timeout)
