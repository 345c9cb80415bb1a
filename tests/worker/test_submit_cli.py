"""``maze-worker submit`` and ``jobs status`` manners: a wait with no job worker says so, Ctrl-C ends the
wait cleanly, and a status that finds nothing says where it looked."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pika
import pytest

from worker.wire import declarations, topology

ROOT = Path(__file__).resolve().parents[2]


def _maze_worker(*args: str, **kwargs: object) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "worker.cli", *args], cwd=ROOT, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kwargs)  # type: ignore[call-overload]


@pytest.mark.integration
def test_a_wait_without_job_workers_says_so_and_ctrl_c_leaves_the_job_queued(amqp_url: str,
                                                                             prefix: str) -> None:
    connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
    channel = connection.channel()
    spec = declarations.jobs_topology(prefix)
    for exchange in spec.exchanges:
        channel.exchange_declare(exchange.name, exchange_type=exchange.type, durable=True)
    for queue in spec.queues:
        channel.queue_declare(queue.name, durable=True, arguments=queue.arguments)
    queue = topology.jobs_queue(prefix, "rollout")
    try:
        submit = _maze_worker("submit", "rollout", "runner.n_episodes=1", "--wait", "--prefix", prefix,
                              "--job-id", "waiting-job", env={**os.environ, topology.AMQP_URL_ENV: amqp_url})
        deadline = time.monotonic() + 30
        while channel.queue_declare(queue, passive=True).method.message_count == 0:
            assert time.monotonic() < deadline and submit.poll() is None, "the job was not submitted"
            time.sleep(0.2)
        time.sleep(7)  # past the idle warning
        submit.send_signal(signal.SIGINT)
        _, stderr = submit.communicate(timeout=30)
        assert submit.returncode == 130, stderr
        assert f"no job worker consumes {queue}" in stderr
        assert "maze-worker jobs status waiting-job" in stderr and "Traceback" not in stderr
        assert channel.queue_declare(queue, passive=True).method.message_count == 1  # still there
    finally:
        for queue_spec in spec.queues:
            channel.queue_delete(queue_spec.name)
        connection.close()


def test_status_of_an_unknown_job_says_where_it_looked(tmp_path: Path) -> None:
    status = _maze_worker("jobs", "status", "never-submitted", "--artifact-root", str(tmp_path))
    stdout, stderr = status.communicate(timeout=60)
    assert status.returncode == 1
    looked_in = str((tmp_path / "jobs" / "never-submitted").resolve())
    assert json.loads(stdout)["looked_in"] == looked_in
    assert f"no record of job never-submitted under {looked_in}" in stderr and "--artifact-root" in stderr


def test_force_publishes_past_the_gate_only_with_a_policy_name(tmp_path: Path) -> None:
    from worker.jobs.submit import submit_parser

    args = submit_parser().parse_intermixed_args(["train", "env.name=CartPole-v1", "--publish-policy", "cp",
                                                  "--force"])
    assert args.force is True and args.publish_policy == "cp"
    alone = _maze_worker("submit", "train", "--force", "--url", "amqp://guest:guest@127.0.0.1:1/%2F")
    _, stderr = alone.communicate(timeout=60)
    assert alone.returncode == 2 and "force_publish: expected only with publish_policy" in stderr


@pytest.mark.parametrize(("arguments", "message"), [
    (["--policy", "/data/runs/ppo", "--dataset", "cartpole/logged-v0"],
     "evaluation.policy: expected published:NAME@VERSION or published:NAME"),
    (["--dataset", "cartpole/logged-v0"], "evaluation.policy: expected published:NAME@VERSION"),
    (["--policy", "published:cartpole", "--dataset", "d-v0", "--gamma", "2"],
     "evaluation.gamma: expected a discount in (0, 1], got float 2.0"),
    (["--policy", "published:cartpole", "--dataset", "d-v0", "--bootstrap", "1"],
     "evaluation.bootstrap: expected an integer number of resamples in [2, 10000], got int 1"),
    (["--policy", "published:cartpole", "--dataset", "d-v0", "--methods", "wis,is"],
     "evaluation.methods: expected a non-empty list of distinct estimators from ['wis', 'dr']"),
    (["--policy", "published:cartpole", "--dataset", "d-v0", "--epsilon", "1"],
     "evaluation.epsilon: expected nil or a probability floor in (0, 1)"),
    (["--policy", "published:cartpole", "--dataset", "d-v0", "seed=1"], "overrides: expected nil"),
])
def test_submit_evaluate_checks_its_options_before_connecting(arguments: list[str], message: str,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    from worker.jobs.submit import submit_command

    with pytest.raises(SystemExit) as info:
        submit_command(["evaluate", *arguments, "--url", "amqp://guest:guest@127.0.0.1:1/%2F"])
    assert info.value.code == 2
    assert message in capsys.readouterr().err


def test_submit_lists_the_evaluate_kind_and_keeps_its_options_off_other_kinds(
        capsys: pytest.CaptureFixture[str]) -> None:
    from worker.jobs.submit import submit_command, submit_parser

    usage = submit_parser().format_help()
    assert "{train,rollout,evaluate}" in usage and "--fqe-steps" in usage and "published:NAME" in usage
    with pytest.raises(SystemExit):
        submit_command(["train", "--gamma", "0.9", "--url", "amqp://guest:guest@127.0.0.1:1/%2F"])
    assert "evaluation: only an evaluate job carries one, got one on a train job" in capsys.readouterr().err
