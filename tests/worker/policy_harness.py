"""Helpers of the policy publication tests: tiny run directories (an untrained policy saved as training saves
it) and an in-process agent worker serving a published policy, with waits on its metrics."""

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pika
import torch
from worker_harness import CARTPOLE, Producer, settings_for, state

from maze_engine import GymMazeEnv
from maze_engine.perception.composers.model import build_model_composers
from maze_engine.policies.torch_policy import save_torch_policy
from worker.policy_reload import published_source
from worker.policy_store import PublishedPolicy, encode_announcement
from worker.service import WorkerService, build_factory

NAME = "cartpole"


def model_config(hidden: int = 16) -> dict[str, Any]:
    """A small FlattenConcat policy and critic; ``hidden`` changes the weights' shapes."""
    return {
        "distribution_mapper_config": [],
        "policy": {"_target_": "maze_engine.ProbabilisticPolicyComposer",
                   "networks": [{"_target_": "maze_engine.FlattenConcatPolicyNet", "non_lin": "torch.nn.Tanh",
                                 "hidden_units": [hidden]}],
                   "substeps_with_separate_agent_nets": []},
        "critic": {"_target_": "maze_engine.SharedStateCriticComposer",
                   "networks": [{"_target_": "maze_engine.FlattenConcatStateValueNet",
                                 "hidden_units": [hidden]}],
                   "stack_observations": False},
    }


def save_run(run_dir: Path, seed: int = 0, env_name: str = "CartPole-v1", hidden: int = 16) -> Path:
    """Write ``state_dict.pt``, ``spaces.json``, ``model.yaml`` (and a ``config.yaml``) for ``env_name``."""
    env = GymMazeEnv(env_name)
    torch.manual_seed(seed)
    config = model_config(hidden)
    policy_composer, critic_composer = build_model_composers(config, env)
    assert critic_composer is not None
    save_torch_policy(run_dir, policy_composer.policy, config, env.observation_spaces_dict,
                      env.action_spaces_dict, critic=critic_composer.critic, agent_counts_dict={0: 1})
    (run_dir / "config.yaml").write_text(f"env:\n  name: {env_name}\nseed: {seed}\n", encoding="utf-8")
    env.close()
    return run_dir


def policy_config(root: Path) -> dict[str, Any]:
    return {"_target_": "worker.policy_store.load_published_policy", "name": NAME, "artifact_root": str(root),
            "version": None}


@contextmanager
def serving(amqp_url: str, prefix: str, root: Path) -> Iterator[WorkerService]:
    """A worker serving the latest published version of NAME under ``root``, in a thread."""
    factory = published_source(policy_config(root), CARTPOLE, None, build_factory)
    service = WorkerService(settings_for(amqp_url, prefix), factory)
    errors: list[BaseException] = []

    def target() -> None:
        try:
            service.run()
        except BaseException as err:  # noqa: BLE001 - reported by the test
            errors.append(err)

    thread = threading.Thread(target=target, name="test-policy-worker", daemon=True)
    thread.start()
    try:
        wait_for(lambda: service.consuming.is_set() or bool(errors), "the worker consumes")
        assert not errors, f"the worker failed to start: {errors[0]!r}"
        yield service
    finally:
        service.stop()
        thread.join(30)
    assert not thread.is_alive(), "the worker did not stop"
    assert not errors, f"the worker raised: {errors[0]!r}"


def wait_for(condition: Any, what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"not within {timeout} s: {what}"
        time.sleep(0.05)


def metric(service: WorkerService, name: str, **labels: str) -> float | None:
    return service.metrics.registry.get_sample_value(name, labels or None)


def announce(amqp_url: str, prefix: str, published: PublishedPolicy) -> None:
    connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
    try:
        connection.channel().basic_publish(f"{prefix}.policies", "", encode_announcement(published))
    finally:
        connection.close()


def version_of(producer: Producer, episode: str, seq: int) -> Any:
    reply = producer.call(episode, seq, state(0.1), reward=None if seq == 0 else 1.0, timeout=60)
    assert reply["error"] is None, reply
    return reply["policy_version"]
