"""Several ``maze-worker`` processes under a closed-loop load: scaling out and in, SIGTERM, kill -9 and a
broker restart, with every reply checked (see cluster_harness: a wrong wrapper state shows in the action).

The broker-restart test restarts the shared RabbitMQ application, which disturbs every other test using it
at that moment; it runs once per suite run.
"""

import sys
import time
from collections import Counter
from pathlib import Path

import pika
import pika.exceptions
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from cluster_harness import Answer, ClosedLoop, ClusterWorker, start_worker  # noqa: E402
from worker_harness import rabbitmqctl, wait_until  # noqa: E402

SHARDS = 8
TAKEOVER_S = 10.0


def balanced(workers: list[ClusterWorker]) -> bool:
    """Each worker's last ownership line says floor(S/W) or ceil(S/W) shards, and they add up to S."""
    counts = [worker.owned() for worker in workers]
    allowed = {SHARDS // len(workers), -(-SHARDS // len(workers))}
    return all(count in allowed for count in counts) and sum(count or 0 for count in counts) == SHARDS


def converged(workers: list[ClusterWorker]) -> bool:
    """Balanced, and single active consumer has given every shard to its owner: each worker is active on
    its own shards only, and every shard has an active owner."""
    if not balanced(workers):
        return False
    active: list[int] = []
    for worker in workers:
        owned, now_active = worker.shards()
        if not now_active <= owned:
            return False
        active += now_active
    return sorted(active) == list(range(SHARDS))


def answered_by(load: ClosedLoop, since: float) -> set[str | None]:
    return {answer.worker for answer in load.answers if answer.at >= since}


def check_phase(load: ClosedLoop, since: float, planned: bool, what: str) -> None:
    """Replies since ``since``: right actions, no errors, nothing resumed on planned moves, no long waits."""
    phase = [answer for answer in load.answers if answer.at >= since]
    assert phase, f"{what}: no replies at all"
    wrong = [answer for answer in phase if not answer.right]
    assert not wrong, f"{what}: {len(wrong)} wrong replies, e.g. {wrong[:3]}"
    errors = Counter(answer.code for answer in phase if answer.code is not None)
    assert not errors, f"{what}: error replies {dict(errors)}"
    if planned:
        assert not [answer for answer in phase if answer.resumed], f"{what}: resumed on a planned move"
    longest = load.longest_wait(since)
    assert longest < TAKEOVER_S, f"{what}: a state waited {longest:.1f} s for its reply"


def stop(load: ClosedLoop, workers: list[ClusterWorker]) -> None:
    load.close()
    for worker in workers:
        if worker.process.poll() is None:
            worker.terminate()


def check_episodes(answers: list[Answer], moves: int) -> None:
    """Per episode: seqs answered in order, one after the other, by at most ``moves`` + 1 runs of workers."""
    by_episode: dict[str, list[Answer]] = {}
    for answer in answers:
        by_episode.setdefault(answer.episode, []).append(answer)
    for episode, replies in by_episode.items():
        seqs = [answer.seq for answer in replies]
        assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), f"episode {episode}: seqs {seqs}"
        runs = 1 + sum(a.worker != b.worker for a, b in zip(replies, replies[1:], strict=False))
        assert runs <= moves + 1, f"episode {episode}: answered by {[a.worker for a in replies]}"


@pytest.mark.integration
def test_scale_out_scale_in_and_kill_under_load(amqp_url: str, prefix: str) -> None:
    workers = [start_worker(amqp_url, prefix, shards=SHARDS)]
    load = ClosedLoop(amqp_url, prefix, episodes=24, length=40)
    try:
        load.run(2.0)
        check_phase(load, 0.0, planned=True, what="one worker")

        # 1 -> 3: the newcomers take their shards, with the episodes on them.
        since = time.monotonic()
        workers += [start_worker(amqp_url, prefix, shards=SHARDS) for _ in range(2)]
        load.run_until(lambda: converged(workers) and len(answered_by(load, time.monotonic() - 1.0)) == 3,
                       timeout=30)
        load.run(2.0)
        check_phase(load, since, planned=True, what="scaling 1 -> 3")
        assert sum("imported" in line for worker in workers[1:] for line in worker.output) >= 1

        # 3 -> 2 by SIGTERM: the leaving worker hands its episodes over and exits 0.
        since = time.monotonic()
        leaving = workers.pop()
        assert leaving.terminate() == 0, leaving.log()
        assert "handed" in leaving.log()
        load.run_until(lambda: converged(workers), timeout=30)
        load.run(3.0)
        check_phase(load, since, planned=True, what="SIGTERM, 3 -> 2")
        assert answered_by(load, time.monotonic() - 1.5) == {worker.worker_id for worker in workers}

        # kill -9: the survivor takes the shards over within the takeover bound; lost states are resumed.
        since = time.monotonic()
        workers.pop(0).kill()
        load.run_until(lambda: converged(workers), timeout=30)
        load.run(3.0)
        check_phase(load, since, planned=False, what="kill -9, 2 -> 1")
        assert not load.waiting() or load.longest_wait(since) < TAKEOVER_S
        assert answered_by(load, time.monotonic() - 1.0) == {workers[0].worker_id}

        check_episodes(load.answers, moves=3)
        assert len(load.answers) > 500
        assert all(answer.resumed is False or answer.at >= since for answer in load.answers)
        # A duplicate reply is a redelivery after the kill, never a second answer on a planned move.
        assert all(answer.at >= since for answer in load.duplicates)
    finally:
        stop(load, workers)


def broker_answers(amqp_url: str) -> bool:
    try:
        pika.BlockingConnection(pika.URLParameters(amqp_url)).close()
    except pika.exceptions.AMQPError:
        return False
    return True


STEPS_AFTER = 6
"""Steps each episode open at the broker restart must take after it."""


@pytest.mark.integration
def test_broker_restart_keeps_the_episodes_going(amqp_url: str, prefix: str) -> None:
    workers = [start_worker(amqp_url, prefix, shards=SHARDS) for _ in range(2)]
    # Long episodes stay open across the restart; enough of them that every shard has one (a worker learns
    # it is active on a shard from a delivery, and with 16 episodes over 8 shards one is often empty).
    load = ClosedLoop(amqp_url, prefix, episodes=64, length=1000)
    try:
        load.run_until(lambda: converged(workers), timeout=30)
        load.run(2.0)
        # The episodes open at the restart with room for the steps checked below (on a fast machine some
        # have already run, or nearly run, their full length).
        before = {answer.episode: answer.seq for answer in load.answers}
        before = {episode: seq for episode, seq in before.items() if seq < load.length - 1 - STEPS_AFTER}
        assert before, "no episode was open when the broker went down"
        rabbitmqctl("stop_app")
        time.sleep(1.0)
        rabbitmqctl("start_app")
        wait_until(lambda: broker_answers(amqp_url), "the broker did not come back", interval=0.5)
        since = time.monotonic()
        load.reconnect(amqp_url)
        # Every episode open before the restart goes on, on its own wrapper stack, on one of the workers.
        load.run_until(lambda: all(any(answer.episode == episode and answer.seq >= seq + STEPS_AFTER
                                       for answer in load.answers) for episode, seq in before.items()),
                       timeout=60)
        check_phase(load, since, planned=True, what="after the broker restart")
        assert all("reconnected" in worker.log() for worker in workers)
        load.run_until(lambda: converged(workers), timeout=30)
    finally:
        stop(load, workers)
