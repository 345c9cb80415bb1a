"""Helpers for tests with several ``maze-worker`` processes: a wrapper whose state shows in every action, the
worker processes, and a closed-loop producer that checks every reply.

``StepPatternWrapper`` replaces the first observation value by a pseudo-random sign of the episode's step
count, and ``SignPolicy`` (worker_harness) answers with that sign: the action at seq k is ``expected(k)``
only if the wrapper stack counted every step, so an episode that moved without its wrapper state, or that
two stacks stepped, answers wrongly within a few steps.
"""

from __future__ import annotations

import os
import random
import re
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgpack
import numpy as np
import pika
from worker_harness import WorkerProcess, start_worker_process, wait_until

from maze_engine.wrappers.wrapper import ObservationWrapper
from worker.wire.protocol import PROTOCOL_VERSION, StateMessage, encode_state

HERE = Path(__file__).resolve().parent
CONF = HERE / "conf"


def pattern(count: int) -> float:
    """+1.0 or -1.0, a fixed pseudo-random function of the step count."""
    return 1.0 if random.Random(count * 7919 + 13).random() < 0.5 else -1.0


def expected(count: int) -> int:
    """SignPolicy's action for the observation of step ``count``."""
    return 1 if pattern(count) >= 0 else 0


class StepPatternWrapper(ObservationWrapper):
    """The first observation value becomes ``pattern(steps since reset)``."""

    def __init__(self, env: Any) -> None:
        super().__init__(env)
        self.count = 0

    def reset(self) -> dict[str, Any]:
        self.count = 0
        return self.observation(self.env.reset())

    def step(self, action: dict[str, Any]) -> Any:
        self.count += 1
        return super().step(action)

    def observation(self, observation: dict[str, Any]) -> dict[str, Any]:
        values = np.array(observation["observation"], dtype=np.float32, copy=True)
        values[0] = pattern(self.count)
        return {**observation, "observation": values}


# ------------------------------------------------------------------------------------------- worker processes

class ClusterWorker(WorkerProcess):
    """A ``maze-worker`` child whose log tells its id and shards."""

    @property
    def worker_id(self) -> str:
        for line in self.output:
            found = re.search(r"worker (\S+) consuming", line)
            if found:
                return found.group(1)
        raise AssertionError("the worker did not log its id:\n" + self.log())

    def shards(self) -> tuple[set[int], set[int]]:
        """(owned, active) shards as its log tells: the last ownership line, and the shards it became the
        active consumer of and has not given away since."""
        owned: set[int] = set()
        active: set[int] = set()
        for line in list(self.output):
            if found := re.search(r"owning \d+ of \d+ shards \[([\d, ]*)\]", line):
                owned = {int(item) for item in found.group(1).split(",") if item.strip()}
            elif found := re.search(r"active on shard (\d+)", line):
                active.add(int(found.group(1)))
            elif re.search(r"passing on a shard|shard moved to another worker|stopping:", line):
                found = re.search(r"shard (\d+)", line.split(":", 3)[-1])
                if found:
                    active.discard(int(found.group(1)))
            elif "reconnected" in line:
                active.clear()
        return owned, active


def start_worker(amqp_url: str, prefix: str, *overrides: str, shards: int = 8,
                 timeout: float = 90) -> ClusterWorker:
    """A checkable ``maze-worker`` (SignPolicy over StepPatternWrapper); returns once it consumes."""
    return start_worker_process(
        amqp_url, prefix, f"hydra.searchpath=[file://{CONF}]", "wrappers=step_pattern",
        "policy._target_=worker_harness.SignPolicy", "stats.interval_s=0", *overrides, shards=shards,
        env={"PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")])}, timeout=timeout,
        kind=ClusterWorker)


# -------------------------------------------------------------------------------------------------- the load

@dataclass
class Answer:
    """One reply as the producer got it."""

    episode: str
    seq: int
    worker: str | None
    code: str | None
    resumed: bool
    right: bool
    """The action is the one the episode's wrapper state implies."""
    at: float


class ClosedLoop:
    """``episodes`` concurrent episodes of ``length`` steps, each sending its next state once the previous
    reply came; a finished episode is followed by a new one. Every reply is checked and kept."""

    def __init__(self, amqp_url: str, prefix: str, episodes: int = 24, length: int = 30) -> None:
        self.prefix = prefix
        self.length = length
        self.connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
        self.channel = self.connection.channel()
        self.reply_queue = self.channel.queue_declare("", exclusive=True).method.queue
        self.channel.basic_consume(self.reply_queue, self._on_reply, auto_ack=True)
        self.sent: dict[str, tuple[str, int, float]] = {}
        self.answered: set[str] = set()
        self.answers: list[Answer] = []
        self.duplicates: list[Answer] = []
        self.base: dict[str, int] = {}
        """Episode -> the seq its wrapper stack started at (0, or where it was resumed)."""
        self.last_reply: dict[str, float] = {}
        self.rng = np.random.default_rng(0)
        for _ in range(episodes):
            self._start()

    def _start(self) -> None:
        episode = uuid.uuid4().hex[:12]
        self.base[episode] = 0
        self._send(episode, 0)

    def _send(self, episode: str, seq: int) -> None:
        cid = uuid.uuid4().hex
        rest = (self.rng.normal(size=3) * 0.05).tolist()
        body = encode_state(StateMessage(PROTOCOL_VERSION, episode, seq, [0.0, *rest],
                                         None if seq == 0 else 1.0, seq == self.length - 1))
        self.sent[cid] = (episode, seq, time.monotonic())
        self.channel.basic_publish(f"{self.prefix}.states", episode, body, pika.BasicProperties(
            reply_to=self.reply_queue, correlation_id=cid, content_type="application/msgpack",
            delivery_mode=2))

    def _on_reply(self, channel: Any, method: Any, properties: Any, body: bytes) -> None:
        reply = msgpack.unpackb(body)
        cid = properties.correlation_id
        episode, seq, _ = self.sent[cid]
        code = (reply.get("error") or {}).get("code")
        resumed = reply.get("resumed") is True
        if resumed:
            self.base[episode] = seq
        done = seq == self.length - 1
        right = reply.get("episode") == episode and reply.get("seq") == seq and (
            code is not None or (reply["action"] is None if done else
                                 reply["action"] == expected(seq - self.base[episode])))
        answer = Answer(episode, seq, reply.get("worker"), code, resumed, right, time.monotonic())
        if cid in self.answered:
            self.duplicates.append(answer)
            return
        self.answered.add(cid)
        self.answers.append(answer)
        self.last_reply[episode] = answer.at
        if code is not None or done:
            self._start()
        else:
            self._send(episode, seq + 1)

    def reconnect(self, amqp_url: str) -> int:
        """After a broker restart: a new connection and reply queue, and every unanswered state sent again
        (as a producer does after a timeout; the worker answers a repeated state from its replay window)."""
        self.connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
        self.channel = self.connection.channel()
        self.reply_queue = self.channel.queue_declare("", exclusive=True).method.queue
        self.channel.basic_consume(self.reply_queue, self._on_reply, auto_ack=True)
        waiting = [(cid, episode, seq) for cid, (episode, seq, _) in self.sent.items()
                   if cid not in self.answered]
        for cid, episode, seq in waiting:
            self.answered.add(cid)  # given up: a late reply to it counts as a duplicate
            self._send(episode, seq)
        return len(waiting)

    def run(self, seconds: float) -> None:
        """Keep the episodes going for ``seconds``."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            self.connection.process_data_events(time_limit=0.05)

    def run_until(self, condition: Callable[[], bool], timeout: float) -> None:
        wait_until(condition, "the condition was not met", timeout,
                   step=lambda: self.connection.process_data_events(time_limit=0.05))

    def waiting(self) -> list[tuple[str, int, float]]:
        """States sent and not answered yet."""
        return [sent for cid, sent in self.sent.items() if cid not in self.answered]

    def longest_wait(self, since: float) -> float:
        """The longest time any state sent after ``since`` waited for its reply (up to now if unanswered)."""
        now = time.monotonic()
        answered_at = {}
        for answer in self.answers:
            answered_at[(answer.episode, answer.seq)] = answer.at
        longest = 0.0
        for episode, seq, sent in self.sent.values():
            if sent >= since:
                longest = max(longest, answered_at.get((episode, seq), now) - sent)
        return longest

    def close(self) -> None:
        if self.connection.is_open:
            self.connection.close()
