"""Helpers of the policy publication tests: tiny run directories (an untrained policy saved as training saves
it) and an in-process agent worker serving a published policy, with waits on its metrics."""

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pika
import torch
from worker_harness import CARTPOLE, Producer, running_service, settings_for, state

from maze_engine import GymMazeEnv
from maze_engine.perception.composers.model import build_model_composers
from maze_engine.policies.torch_io import save_torch_policy
from worker.policy_store.announcements import encode_announcement
from worker.policy_store.store import PublishedPolicy
from worker.policy_store.versioned import published_source
from worker.serving.factory import build_factory
from worker.serving.service import WorkerService

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


def save_runs(base: Path) -> dict[str, Path]:
    """Run directories "one" and "two" (CartPole, other seeds) and "acrobot" (other spaces) under ``base``."""
    return {"one": save_run(base / "one", seed=1), "two": save_run(base / "two", seed=2),
            "acrobot": save_run(base / "acrobot", env_name="Acrobot-v1")}


def policy_config(root: Path, name: str = NAME) -> dict[str, Any]:
    return {"_target_": "worker.policy_store.store.load_published_policy", "name": name,
            "artifact_root": str(root),
            "version": None}


@contextmanager
def serving(amqp_url: str, prefix: str, root: Path) -> Iterator[WorkerService]:
    """A worker serving the latest published version of NAME under ``root``, in a thread."""
    factory = published_source(policy_config(root), CARTPOLE, None, build_factory)
    service = WorkerService(settings_for(amqp_url, prefix), factory)
    with running_service(service, "the worker", start_timeout=60.0, stop_timeout=30.0):
        yield service


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
