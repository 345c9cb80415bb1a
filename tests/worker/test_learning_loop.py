"""The loop of docs/experience.md, end to end on the real broker: a heuristic CartPole controller plays
through an agent worker in shadow mode that records the episodes; a behavioural cloning job learns from the
experience stream (``dataset=stream:<prefix>``) and publishes the policy; the agent worker reloads it, and
episodes acting on the learned policy reach the controller's return. Also: a stream that holds nothing, or a
prefix that is no prefix, refuses the job naming ``dataset``."""

from __future__ import annotations

import re
import statistics
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import gymnasium as gym
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from job_harness import RecordingClient, job_settings, job_worker  # noqa: E402

from worker.client import JobClient, MazeClient  # noqa: E402
from worker.demo_tour import FRESH_JOB  # noqa: E402
from worker.jobs.codec import new_job  # noqa: E402
from worker.launcher import WorkerProcess  # noqa: E402
from worker.wire import topology  # noqa: E402

POLICY = "loop"
ENV = ["env=gym_env", "env.name=CartPole-v1"]
BC_JOB = ["algorithm=bc", "algorithm.n_epochs=15", "algorithm.eval_repeats=4", "algorithm.patience=4"]
RECORDED_EPISODES = 12


def controller(state: Any) -> int:
    """Push the cart the way the pole leans (and is falling): about 500 on CartPole-v1."""
    return 1 if state[2] + 0.5 * state[3] > 0 else 0


def play(client: MazeClient, seed: int, shadow: bool) -> tuple[float, int | None]:
    """One CartPole episode through the workers: the controller acts and reports its actions (``shadow``),
    or the worker's proposals are applied. The return and the policy version of the replies."""
    env = gym.make("CartPole-v1")
    state, _ = env.reset(seed=seed)
    episode = client.episode()
    total, reward, applied = 0.0, None, None
    while True:
        proposal = episode.step(state.tolist(), reward=reward, applied_action=applied)
        action = controller(state) if shadow else int(proposal)
        state, step_reward, terminated, truncated, _ = env.step(action)
        reward, applied = float(step_reward), (action if shadow else None)
        total += reward
        if terminated or truncated:
            episode.close(state.tolist(), reward=reward, truncated=truncated and not terminated,
                          applied_action=applied)
            env.close()
            return total, episode.policy_version


def run_job(client: JobClient, job: Any, timeout: float) -> Any:
    client.watch(job.job_id)
    client.submit(job)
    return client.wait(job.job_id, timeout)


@pytest.mark.slow
@pytest.mark.integration
def test_served_episodes_teach_the_policy_that_then_serves(amqp_url: str, prefix: str, tmp_path: Path,
                                                           broker_cleanup: Any) -> None:
    root = tmp_path / "artifacts"
    common = [f"broker.prefix={prefix}", f"artifact_root={root}", "broker.shards=2", "stats.interval_s=0"]
    broker_cleanup.queue(topology.experience_stream(prefix))
    for kind in topology.JOB_KINDS:
        broker_cleanup.queue(topology.jobs_queue(prefix, kind))
    broker_cleanup.exchange(topology.jobs_return_exchange(prefix))
    timings: dict[str, float] = {}
    started = time.monotonic()
    workers: list[WorkerProcess] = []
    try:
        jobs = WorkerProcess.start(amqp_url, ["role=jobs", "jobs.poll_interval_s=0.2", *common], timeout=120)
        workers.append(jobs)
        with JobClient(amqp_url, prefix, timeout=30) as job_client:
            fresh = run_job(job_client, new_job(f"{prefix}-fresh", "train", FRESH_JOB, publish_policy=POLICY,
                                                force_publish=True), 180)
            assert fresh.status == "finished" and fresh.policy["published"], fresh
            fresh_return = fresh.summary["best_eval_return"]
            timings["publish version 1"] = time.monotonic() - started
            agent = WorkerProcess.start(amqp_url, [*ENV, "policy=published_policy", f"policy.name={POLICY}",
                                                   "deterministic=true", "serving.mode=shadow",
                                                   "experience.record=true", *common], timeout=120)
            workers.append(agent)
            mark = time.monotonic()
            with MazeClient(amqp_url, prefix=prefix, timeout=30) as client:
                shadow = [play(client, seed, shadow=True) for seed in range(RECORDED_EPISODES)]
                controller_return = statistics.fmean(total for total, _ in shadow)
                assert {version for _, version in shadow} == {1}
                timings["controller episodes (shadow, recorded)"] = time.monotonic() - mark

                mark = time.monotonic()
                bc = run_job(job_client, new_job(f"{prefix}-bc", "train",
                                                 [*ENV, *BC_JOB, f"dataset=stream:{prefix}"],
                                                 publish_policy=POLICY), 300)
                assert bc.status == "finished", (bc, jobs.log()[-3000:])
                assert bc.policy["published"] and bc.policy["version"] == 2, bc.policy
                assert bc.summary["best_eval_return"] > fresh_return
                timings["BC job (export, train, publish)"] = time.monotonic() - mark

                mark = time.monotonic()
                acted: list[tuple[float, int | None]] = []
                deadline = time.monotonic() + 60
                seed = 1000
                while len(acted) < 5:
                    assert time.monotonic() < deadline, f"no episode acted on version 2: {acted}"
                    total, version = play(client, seed, shadow=False)
                    seed += 1
                    if version == 2:
                        acted.append((total, version))
                learned_return = statistics.fmean(total for total, _ in acted)
                timings["learned policy episodes (acting)"] = time.monotonic() - mark
        timings["total"] = time.monotonic() - started
        print(f"\ncontroller {controller_return:.1f} over {RECORDED_EPISODES} episodes; fresh version 1 "
              f"evaluation {fresh_return:.1f}; BC evaluation {bc.summary['best_eval_return']:.1f}; learned "
              f"policy acting {learned_return:.1f} ({[total for total, _ in acted]}); timings "
              f"{ {name: round(value, 1) for name, value in timings.items()} }")
        assert learned_return >= min(450.0, 0.95 * controller_return)
    finally:
        for worker in reversed(workers):
            worker.stop()
        for worker in workers:
            for found in re.finditer(r"\(lease queue (\S+)\)", worker.log()):
                broker_cleanup.queue(found.group(1))


@pytest.mark.integration
def test_a_stream_without_episodes_fails_the_job_and_a_bad_prefix_refuses_it(
        amqp_url: str, prefix: str, tmp_path: Path, broker_cleanup: Any) -> None:
    """The job's process exports the stream: an empty one fails the job (code data, once, not retried); a
    prefix the guard refuses never reaches a process (bad_job)."""
    settings = job_settings(amqp_url, prefix, tmp_path / "artifacts")
    broker_cleanup.queue(topology.experience_stream(f"{prefix}.nothing"))
    with job_worker(settings, broker_cleanup), RecordingClient(amqp_url, prefix) as client:
        for job_id, dataset, expected, code in [
                (f"empty-{uuid.uuid4().hex[:6]}", f"stream:{prefix}.nothing", "cannot use stream:", "data"),
                (f"bad-{uuid.uuid4().hex[:6]}", "stream:amq.x", "expected stream:<prefix>", "bad_job")]:
            client.watch(job_id)
            client.submit(new_job(job_id, "train", [*ENV, "algorithm=bc", f"dataset={dataset}"]))
            result = client.result(job_id, timeout=60)
            assert result.status == "failed" and result.error is not None, result
            assert result.error.code == code and "dataset" in result.error.message, result.error
            assert expected in result.error.message, result.error
            assert result.attempts <= 1, result


def test_a_bare_minari_id_resolves_under_the_artifact_roots_datasets(tmp_path: Path) -> None:
    from worker.jobs.guard import JobGuard, JobRefused

    guard = JobGuard(tmp_path)
    job = new_job("bare-id", "train", ["algorithm=bc", "dataset=cartpole/expert-v0"])
    assert guard.vet(job).overrides[1] == f"dataset={(tmp_path / 'datasets/cartpole/expert-v0').resolve()}"
    (tmp_path / "runs" / "minari").mkdir(parents=True)  # a path inside the root stays that path
    job = new_job("a-path", "train", ["algorithm=bc", "dataset=runs/minari"])
    assert guard.vet(job).overrides[1] == f"dataset={(tmp_path / 'runs/minari').resolve()}"
    job = new_job("outside", "train", ["algorithm=bc", "dataset=/etc"])
    with pytest.raises(JobRefused, match="inside the artifact root"):
        guard.vet(job)
    assert guard.vet(new_job("stream", "train", ["algorithm=bc", "dataset=stream:maze.prod"])).overrides[1] \
        == "dataset=stream:maze.prod"
