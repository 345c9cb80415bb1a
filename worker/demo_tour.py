"""``make demo``: the whole product in about a minute, on one machine.

1. A job worker (``maze-worker role=jobs``) and a first policy version: a training job of one update,
   published as version 1 of ``cartpole`` (a fresh, untrained policy).
2. An agent worker serving ``policy=published_policy policy.name=cartpole``, and a production system playing
   CartPole episodes through ``worker.client``: the returns of the fresh policy.
3. A PPO training job submitted as a message with ``publish_policy``, followed epoch by epoch, while the
   production system keeps playing. The job publishes version 2 through the publishing gate, the agent
   worker loads it without a restart: episodes that started on version 1 finish on it, new ones get version 2.
4. The same table of returns per version before and after, a PNG of the returns over time coloured by
   version, the time each part took; then both workers are stopped with SIGTERM and must exit 0.
"""

from __future__ import annotations

import contextlib
import re
import statistics
import sys
import time
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from worker.broker import probe
from worker.client import JobClient, MazeClient
from worker.demo_production import ENV_NAME, Production
from worker.demo_report import plot_returns
from worker.jobs.codec import new_job
from worker.jobs.schema import JobEvent, JobMessage, JobResult
from worker.launcher import WorkerProcess
from worker.wire import topology

POLICY_NAME = "cartpole"
TARGET_RETURN = 400.0
"""Mean return the trained version must reach on CartPole-v1 (500 steps at most)."""
PPO = ["algorithm=ppo", "runner=dev", "runner.n_envs=8", "runner.n_eval_envs=8", "model=flatten_concat",
       "model.critic.networks.0.hidden_units=[64,64]", "algorithm.n_rollout_steps=32",
       "algorithm.batch_size=256",
       "algorithm.n_optimization_epochs=10", "algorithm.lr=0.002", "algorithm.lr_schedule=linear",
       "algorithm.gamma=0.98", "algorithm.gae_lambda=0.8", "algorithm.clip_range=0.2",
       "algorithm.entropy_coef=0.0", "algorithm.max_grad_norm=0.5", "algorithm.eval_repeats=16",
       "algorithm.patience=0", "seeding.env_base_seed=1234", "seeding.agent_base_seed=1234"]
"""PPO settings that solve CartPole in seconds on one core (benchmarks/train_ppo_cartpole.py's, 64-64 nets),
evaluated on 16 episodes after every epoch."""
FRESH_JOB = [*PPO, "algorithm.n_epochs=1", "algorithm.epoch_length=1"]
"""One update: a practically untrained policy, evaluated, to publish as version 1."""
TRAIN_JOB = [*PPO, "algorithm.n_epochs=20", "algorithm.epoch_length=10"]
"""20 epochs of 10 updates (51,200 steps): reaches 500 within the 20 epochs on the seeds we tried."""


class Clock:
    """The parts of the demo and how long each took."""

    def __init__(self) -> None:
        self.started = time.perf_counter()
        self.parts: list[tuple[str, float]] = []

    @contextlib.contextmanager
    def part(self, name: str) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            self.parts.append((name, time.perf_counter() - started))

    def table(self) -> str:
        width = max(len(name) for name, _ in self.parts)
        rows = [f"  {name:<{width}}  {seconds:6.1f} s" for name, seconds in self.parts]
        return "\n".join([*rows, f"  {'total':<{width}}  {time.perf_counter() - self.started:6.1f} s"])


def say(text: str) -> None:
    print(f"\n== {text}", flush=True)


class JobProgress:
    """Prints a job's events as they arrive; as a callable, reads what has arrived and says whether the
    job's result is in (the production system asks it between steps)."""

    def __init__(self, client: JobClient, job_id: str) -> None:
        self.client = client
        self.job_id = job_id
        self._seen = 0

    def __call__(self) -> bool:
        self.client.poll(0.0)
        self.show_new()
        return self.job_id in self.client.results

    def show_new(self) -> None:
        events = self.client.events[self._seen:]
        self._seen += len(events)
        for event in events:
            if event.get("job_id") == self.job_id:
                show_event(event)


def _mean(stats: Any, section: str) -> float | None:
    value = (((stats or {}).get(section) or {}).get("episode_return") or {}).get("mean")
    return value if isinstance(value, int | float) else None


def show_event(event: dict[str, Any]) -> None:
    name = event.get("event")
    if name == JobEvent.EPOCH:
        stats = event.get("stats")
        evaluation, training = _mean(stats, "eval"), _mean(stats, "train")
        print(f"   [{event['job_id']}] epoch {event.get('epoch')}/{event.get('epochs')}: evaluation return "
              f"{'-' if evaluation is None else f'{evaluation:.1f}'}, training return "
              f"{'-' if training is None else f'{training:.1f}'}", flush=True)
    elif name in (JobEvent.ACCEPTED, JobEvent.STARTED):
        print(f"   [{event['job_id']}] {name}", flush=True)


def run_job(client: JobClient, job: JobMessage, timeout: float = 300.0) -> JobResult:
    """Submit ``job`` and wait for its result, printing its events."""
    client.watch(job.job_id)
    client.submit(job)
    return client.wait(job.job_id, timeout, on_event=show_event)


def describe_result(result: JobResult) -> str:
    summary = result.summary or {}
    best = summary.get("best_eval_return")
    text = (f"{result.job_id}: {result.status}, {summary.get('epochs', '?')} epochs, best evaluation return "
            f"{'-' if best is None else f'{best:.1f}'}")
    if result.error is not None:
        text += f"; error {result.error.code}: {result.error.message}"
    if result.policy:
        text += f"\n   {result.policy.get('message') or result.policy}"
    return text


def _cleanup(url: str, prefix: str, workers: Sequence[WorkerProcess]) -> None:
    """Delete the demo's queues and exchanges (the job workers' lease queues are named in their logs)."""
    leases = tuple(found.group(1) for worker in workers
                   for found in re.finditer(r"\(lease queue (\S+)\)", worker.log()))
    jobs = tuple(topology.jobs_queue(prefix, kind) for kind in topology.JOB_KINDS)
    with contextlib.suppress(Exception):  # a broker gone by now leaves nothing to tidy
        probe.delete_prefix(url, prefix, queues=(*jobs, *leases),
                            exchanges=(topology.jobs_return_exchange(prefix),))


class Tour:
    """One run of the demo against ``url`` under ``prefix``; ``run`` returns the exit code."""

    def __init__(self, url: str, prefix: str, output: Path, in_flight: int, seconds: float,
                 after_episodes: int, overrides: Sequence[str]) -> None:
        self.url = url
        self.prefix = prefix
        self.output = output
        self.in_flight = in_flight
        self.seconds = seconds
        self.after_episodes = after_episodes
        self.common = [f"broker.prefix={prefix}", f"artifact_root={output / 'artifacts'}", "broker.shards=4",
                       "stats.interval_s=0", *overrides]
        """Overrides of both workers."""
        self.clock = Clock()
        self.workers: list[WorkerProcess] = []
        self.marks: dict[str, float] = {}
        """Moments on the picture's time axis."""
        self.failures: list[str] = []
        self.trained_version: int | None = None
        self.learning_curves: list[Path] = []
        """PNGs the training job wrote to its run directory (the engine's learning curve)."""

    def run(self) -> int:
        say(f"outputs in {self.output}; broker prefix {self.prefix}")
        production: Production | None = None
        try:
            production = self._serve_and_train()
        finally:
            say("stopping both workers (SIGTERM)")
            with self.clock.part("stop the workers"):
                codes = [worker.stop() for worker in reversed(self.workers)]
            _cleanup(self.url, self.prefix, self.workers)
        self.failures += [f"a worker exited with {code}, expected 0" for code in codes if code != 0]
        if codes and all(code == 0 for code in codes):
            print("both workers stopped cleanly (exit code 0)", flush=True)
        if production is None:
            return _failed("; ".join(self.failures))
        self._report(production)
        return _failed("; ".join(self.failures)) if self.failures else 0

    def _job_id(self, what: str) -> str:
        return f"{self.prefix}-{what}-{uuid.uuid4().hex[:6]}"

    def _start(self, name: str, overrides: Sequence[str]) -> None:
        with self.clock.part(f"start the {name} worker"):
            worker = WorkerProcess.start(self.url, [*overrides, *self.common], echo=name, timeout=None)
            self.workers.append(worker)
            worker.wait_healthy(timeout=120)

    def _serve_and_train(self) -> Production | None:
        """Parts 1 to 3; the production system, or None when a worker or the first version failed."""
        self._start("jobs", ["role=jobs", "jobs.poll_interval_s=0.2"])
        with JobClient(self.url, self.prefix, timeout=30) as job_client:
            say(f"publishing a first version of {POLICY_NAME!r}: a training job of one update (a fresh "
                "policy)")
            with self.clock.part("publish a fresh version (training job of 1 update)"):
                # forced: a reused --output may hold better versions, and the demo starts from a fresh one
                fresh = run_job(job_client, new_job(self._job_id("fresh"), "train", FRESH_JOB,
                                                    publish_policy=POLICY_NAME, force_publish=True))
            print(f"   {describe_result(fresh)}", flush=True)
            if fresh.status != "finished" or not (fresh.policy or {}).get("published"):
                self.failures.append("the first version was not published")
                return None
            say(f"starting an agent worker on policy=published_policy policy.name={POLICY_NAME}")
            self._start("agent", ["env=gym_env", f"env.name={ENV_NAME}", "policy=published_policy",
                                  f"policy.name={POLICY_NAME}"])
            with MazeClient(self.url, prefix=self.prefix, timeout=30) as client:
                production = Production(client)
                say(f"playing {self.in_flight} concurrent {ENV_NAME} episodes for {self.seconds:g} s "
                    "through worker.client")
                with self.clock.part(f"play version 1 ({self.seconds:g} s)"):
                    production.play(self.in_flight, seconds=self.seconds)
                say("returns per policy version, before the training")
                print(production.table(), flush=True)
                self._train_and_reload(job_client, production)
                production.drain()
        return production

    def _train_and_reload(self, job_client: JobClient, production: Production) -> None:
        """Part 3: train and publish version 2 while serving, then watch the fleet move to it."""
        job = new_job(self._job_id("ppo"), "train", TRAIN_JOB, publish_policy=POLICY_NAME, time_limit_s=600)
        say(f"submitting PPO training job {job.job_id} (publish_policy={POLICY_NAME}) as a message; the "
            "production system keeps playing meanwhile")
        progress = JobProgress(job_client, job.job_id)
        job_client.watch(job.job_id)
        self.marks["training job submitted"] = production.elapsed()
        with self.clock.part("train PPO (job, 20 epochs) while serving"):
            job_client.submit(job)
            production.play(max(1, self.in_flight // 4), stop=progress, rate=50.0)
        result = job_client.results.pop(job.job_id)
        print(f"   {describe_result(result)}", flush=True)
        self.learning_curves = sorted(Path(result.output_dir).glob("*.png"))
        self.marks["training job finished"] = production.elapsed()
        if result.status != "finished" or not (result.policy or {}).get("published"):
            self.failures.append("the trained version was not published")
            return
        version = self.trained_version = int((result.policy or {})["version"])
        with self.clock.part(f"hot reload: first reply from version {version}"):
            production.play(self.in_flight, stop=lambda: version in production.first_served, seconds=60)
        if version not in production.first_served:
            self.failures.append(f"the agent worker did not serve version {version} within 60 s")
            return
        self.marks[f"first reply from version {version}"] = production.first_served[version]
        say(f"the fleet serves version {version}: playing until {self.after_episodes} of its episodes have "
            "finished")
        with self.clock.part(f"play version {version} ({self.after_episodes} episodes)"):
            production.play(self.in_flight, stop=lambda: production.count(version) >= self.after_episodes,
                            seconds=120)

    def _report(self, production: Production) -> None:
        """Part 4: the table after the reload, the picture, the time per part, the target."""
        say("returns per policy version, after the reload")
        print(production.table(), flush=True)
        print("\n".join(production.traffic_lines()), flush=True)
        if production.errors:
            self.failures.append(f"the workers answered with errors: {production.errors}")
        picture = plot_returns(production.finished, self.marks, self.output / "returns.png")
        print(f"\nepisode returns over time, coloured by policy version: {picture}", flush=True)
        for curve in self.learning_curves:
            print(f"the training job's learning curve: {curve}", flush=True)
        say("time per part")
        print(self.clock.table(), flush=True)
        if self.trained_version is None:
            return
        trained = production.returns(self.trained_version, any_version=False)
        mean = statistics.fmean(trained) if trained else 0.0
        verdict = "reaches" if mean >= TARGET_RETURN else "is below"
        line = (f"trained version {self.trained_version}: mean return {mean:.1f} {verdict} the target "
                f"{TARGET_RETURN:g}")
        if mean < TARGET_RETURN:
            self.failures.append(line)
        print(f"\n{line}", flush=True)


def tour(url: str, prefix: str, output: Path, in_flight: int, seconds: float, after_episodes: int,
         overrides: Sequence[str]) -> int:
    """The demo of the module docstring; the exit code (0: everything worked and the target was reached)."""
    return Tour(url, prefix, output, in_flight, seconds, after_episodes, overrides).run()


def _failed(reason: str) -> int:
    print(f"\nthe demo failed: {reason or 'see the output above'}", file=sys.stderr, flush=True)
    return 1
