"""Prometheus metrics of a job worker (names fixed, listed in docs/jobs.md), in a registry it is given."""

from prometheus_client import CollectorRegistry, Counter, Gauge


class JobMetrics:
    """Jobs by kind and final status, the running job, dead letters, retries."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.jobs = Counter("maze_jobs", "Jobs answered, by kind and final status", ["kind", "status"],
                            registry=self.registry)
        self.running = Gauge("maze_jobs_running", "1 while this worker runs a job", registry=self.registry)
        self.retries = Counter("maze_jobs_retries",
                               "Jobs put back on their queue after their process crashed",
                               registry=self.registry)
        self.dead_letters = Counter("maze_jobs_dead_letters", "Job messages sent to <prefix>.dead, by reason",
                                    ["reason"], registry=self.registry)
        self.epochs = Counter("maze_jobs_epochs", "Training epochs reported by the jobs of this worker",
                              registry=self.registry)
