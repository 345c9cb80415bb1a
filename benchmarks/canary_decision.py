"""Canary decision: a worse candidate released at 20% with the automatic gate is rolled back, a better one
promoted, while a production system plays CartPole against the worker.

Publishes three versions of a 64-64 MLP policy in a fresh artifact root: 1, a linear controller
(``theta + theta_dot > 0``: mean return ~490) made the stable version; 2, the untrained net (a near-random
policy, ~20); 3, a better controller (``3 theta + theta_dot > 0``: 500). A ``maze-worker`` serves the name;
``maze-worker policies release NAME 2 --canary 0.2 --auto --min-episodes N`` and, once that is decided,
``... release NAME 3 ...``. The production system here keeps ``--in-flight`` CartPole episodes running (each
a gymnasium env, every action asked of the worker) and checks that no reply is an error and no episode's
replies change version. Prints one JSON line with each decision, the episodes it took (per side, from the
figures behind it) and its wall time.

    .venv/bin/python benchmarks/canary_decision.py [--min-episodes 20] [--in-flight 64]
"""

import argparse
import json
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import gymnasium as gym
import msgpack
import pika
import torch
from worker_batch_step import save_untrained_policy
from worker_roundtrip import URL

from worker.broker.probe import delete_prefix
from worker.launcher import WorkerProcess, free_port
from worker.policies_cli import policies_command
from worker.policy_store import releases
from worker.policy_store.store import publish_policy

NAME = "bench"


def controller_run(run_dir: Path, weights: tuple[float, ...] | None) -> Path:
    """The untrained net's run directory; with ``weights``: a net that pushes right when weights . obs > 0."""
    save_untrained_policy(run_dir)
    if weights is None:
        return run_dir
    state = torch.load(run_dir / "state_dict.pt", weights_only=True)
    policy = state["policy"]
    for key in policy:
        policy[key].zero_()
    first, second = sorted(key for key in policy if key.endswith("weight") and ".mlp." in key)[:2]
    policy[first][0] = 100.0 * torch.tensor(weights)
    policy[second][0, 0] = 10.0
    head = next(key for key in policy if key.endswith("action.weight"))
    policy[head][:, 0] = torch.tensor([-20.0, 20.0])
    torch.save(state, run_dir / "state_dict.pt")
    return run_dir


class Production:
    """``in_flight`` CartPole episodes over a raw connection; checks every reply."""

    def __init__(self, prefix: str, in_flight: int) -> None:
        self.prefix = prefix
        self.connection = pika.BlockingConnection(pika.URLParameters(URL))
        self.channel = self.connection.channel()
        self.reply_queue = self.channel.queue_declare("", exclusive=True).method.queue
        self.channel.basic_consume(self.reply_queue, self._on_reply, auto_ack=True)
        self.running: dict[str, dict[str, Any]] = {}
        self.finished: list[tuple[int, float]] = []
        self.errors = 0
        self.switched = 0
        self.seed = 0
        for _ in range(in_flight):
            self._start()

    def _start(self) -> None:
        env = gym.make("CartPole-v1")
        observation, _ = env.reset(seed=self.seed)
        self.seed += 1
        episode = uuid.uuid4().hex
        self.running[episode] = {"env": env, "seq": 0, "return": 0.0, "version": None}
        self._send(episode, observation.tolist(), None, False)

    def _send(self, episode: str, observation: list[float], reward: float | None, done: bool) -> None:
        item = self.running[episode]
        body = msgpack.packb({"v": 1, "episode": episode, "seq": item["seq"], "state": observation,
                              "reward": reward, "done": done})
        self.channel.basic_publish(f"{self.prefix}.states", episode, body,
                                   pika.BasicProperties(reply_to=self.reply_queue, correlation_id=episode))

    def _on_reply(self, channel: Any, method: Any, properties: Any, body: bytes) -> None:
        reply = msgpack.unpackb(body)
        episode = reply["episode"]
        item = self.running[episode]
        if reply.get("error"):
            self.errors += 1
        version = reply.get("policy_version")
        if item["version"] is None:
            item["version"] = version
        elif version != item["version"]:
            self.switched += 1
        if item.get("done"):
            self.finished.append((item["version"], item["return"]))
            item["env"].close()
            del self.running[episode]
            self._start()
            return
        observation, reward, terminated, truncated, _ = item["env"].step(int(reply["action"]))
        item["seq"] += 1
        item["return"] += float(reward)
        item["done"] = terminated or truncated
        self._send(episode, observation.tolist(), float(reward), item["done"])

    def play_until(self, condition: Any, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            if time.monotonic() > deadline:
                raise TimeoutError(f"no decision within {timeout} s")
            self.connection.process_data_events(time_limit=0.2)

    def close(self) -> None:
        self.connection.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--min-episodes", type=int, default=20)
    parser.add_argument("--in-flight", type=int, default=64)
    parser.add_argument("--share", type=float, default=0.2)
    parser.add_argument("--timeout", type=float, default=600.0)
    args = parser.parse_args()

    prefix = f"bench-canary-{uuid.uuid4().hex[:8]}"
    port = free_port()
    decisions: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as directory:
        root = Path(directory) / "artifacts"
        for number, weights in enumerate([(0, 0, 1, 1), None, (0, 0, 3, 1)]):
            publish_policy(root, NAME, controller_run(Path(directory) / f"run-{number}", weights))
        releases.promote(root, NAME, 1)
        worker = WorkerProcess.start(URL, ["env=gym_env", "env.name=CartPole-v1", "policy=published_policy",
                                           f"policy.name={NAME}", f"artifact_root={root}",
                                           f"broker.prefix={prefix}", f"metrics.port={port}"], timeout=None)
        try:
            worker.wait_healthy(90)
            production = Production(prefix, args.in_flight)
            try:
                production.play_until(lambda: len(production.finished) >= args.in_flight, args.timeout)
                for candidate in (2, 3):
                    started, finished_before = time.monotonic(), len(production.finished)
                    assert policies_command(["release", NAME, str(candidate), "--canary", str(args.share),
                                             "--auto", "--min-episodes", str(args.min_episodes),
                                             "--artifact-root", str(root), "--url", URL,
                                             "--prefix", prefix]) == 0
                    production.play_until(lambda: releases.read_release(root, NAME).canary is None,  # type: ignore[union-attr]
                                          args.timeout)
                    state = releases.read_release(root, NAME)
                    assert state is not None and state.last_decision is not None
                    figures = state.last_decision["figures"]
                    decisions.append({
                        "candidate": candidate, "action": state.last_decision["action"],
                        "stable_after": state.stable, "seconds": round(time.monotonic() - started, 1),
                        "episodes_finished_meanwhile": len(production.finished) - finished_before,
                        "decided_on_episodes": {"stable": figures["stable"]["episodes"],
                                                "canary": figures["canary"]["episodes"]},
                        "mean_return": {"stable": round(figures["stable"]["mean_return"], 1),
                                        "canary": round(figures["canary"]["mean_return"], 1)},
                        "p_value": figures["p_value"]})
                    time.sleep(0.5)  # the announcement reaches the worker; episodes go on meanwhile
                errors, switched = production.errors, production.switched
            finally:
                production.close()
        finally:
            exit_code = worker.stop()
        delete_prefix(URL, prefix)
    expected = [(2, "rollback"), (3, "promote")]
    print(json.dumps({
        "benchmark": "canary_decision", "share": args.share, "min_episodes": args.min_episodes,
        "in_flight": args.in_flight, "decisions": decisions, "error_replies": errors,
        "episodes_switching_version": switched, "worker_exit_code": exit_code,
        "meets_target": [(d["candidate"], d["action"]) for d in decisions] == expected and errors == 0
        and switched == 0,
    }))


if __name__ == "__main__":
    main()
