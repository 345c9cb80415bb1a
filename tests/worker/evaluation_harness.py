"""Test helpers for off-policy evaluation: logged CartPole episodes as a Minari dataset (infos as
``maze-worker experience export`` writes them), an untrained policy saved as training saves it, and
recorded episodes published to the experience stream of a prefix."""

from __future__ import annotations

import math
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from gymnasium import spaces

from maze_engine import GymMazeEnv
from maze_engine.perception.composers.model import build_model_composers
from maze_engine.policies.torch_io import save_torch_policy
from maze_engine.records.minari import MinariWriter
from worker.broker.stream import StreamPublisher, stream_arguments
from worker.experience.record import ExperienceRecord, encode_record
from worker.settings import BrokerSettings
from worker.wire import topology

OBSERVATIONS = spaces.Dict({"observation": gym.make("CartPole-v1").observation_space})
ACTIONS = spaces.Dict({"action": spaces.Discrete(2)})


def write_dataset(path: Path, episodes: int = 30, seed: int = 0, infos: bool = True,
                  overridden: int = 0, dataset_id: str = "cartpole/logged-v0") -> Path:
    """Uniformly random CartPole episodes, infos as the export writes them; the first ``overridden`` steps
    of each episode were applied by the producer against the proposal."""
    env, rng = gym.make("CartPole-v1"), np.random.default_rng(seed)
    writer = MinariWriter(path / "data", OBSERVATIONS, ACTIONS, dataset_id=dataset_id)
    for episode in range(episodes):
        observation, _ = env.reset(seed=seed * 1000 + episode)
        observations, actions, rewards, done = [observation], [], [], False
        while not done:
            actions.append(int(rng.integers(2)))
            observation, reward, terminated, truncated, _ = env.step(actions[-1])
            observations.append(observation)
            rewards.append(reward)
            done = terminated or truncated
        count = len(actions)
        proposed = np.array([*actions, actions[-1]])
        proposed[:overridden] = 1 - proposed[:overridden]
        writer.add_episode({"observation": np.asarray(observations, np.float32)},
                           {"action": np.array(actions)}, rewards=np.asarray(rewards),
                           terminations=np.arange(count) == count - 1,
                           truncations=np.zeros(count, bool),
                           infos={"proposed_action": {"action": proposed},
                                  "log_prob": np.full(count + 1, math.log(0.5)),
                                  "applied_reported": np.arange(count + 1) < overridden} if infos else None)
    writer.close()
    env.close()
    return path


def save_run(run_dir: Path, seed: int) -> Path:
    """An untrained CartPole policy saved as training saves it (the default model)."""
    torch.manual_seed(seed)
    env = GymMazeEnv("CartPole-v1")
    config = {"policy": {"_target_": "maze_engine.ProbabilisticPolicyComposer",
                         "networks": [{"_target_": "maze_engine.FlattenConcatPolicyNet", "hidden_units": [16],
                                       "non_lin": "torch.nn.Tanh"}],
                         "substeps_with_separate_agent_nets": []},
              "distribution_mapper_config": []}
    policy_composer, _ = build_model_composers(config, env)
    save_torch_policy(run_dir, policy_composer.policy, config, env.observation_spaces_dict,
                      env.action_spaces_dict)
    return run_dir


def step_columns(steps: int, override_at: int | None = None) -> dict[str, Any]:
    """The columns of a record (docs/experience.md) for ``steps`` alternating proposals, applied unless
    ``override_at``."""
    proposal = np.arange(steps) % 2
    applied = proposal.copy()
    if override_at is not None:
        applied[override_at] = 1 - applied[override_at]
    observations = np.random.default_rng(steps).normal(0.0, 0.05, (steps, 4)).astype(np.float32)
    return {"seq": np.arange(steps), "observation": {"observation": observations},
            "action": {"action": proposal}, "log_prob": np.full(steps, math.log(0.5)),
            "applied_action": {"action": applied}, "applied_reported": np.zeros(steps, bool),
            "reward": np.ones(steps), "terminated": np.arange(steps) == steps - 1,
            "truncated": np.zeros(steps, bool), "time": np.zeros(steps)}


def publish_episodes(amqp_url: str, prefix: str, lengths: Sequence[int]) -> None:
    """One recorded episode per length, each in one final record, to ``<prefix>.experience`` (declared
    here; the ``prefix`` fixture deletes it)."""
    stream = topology.experience_stream(prefix)
    publisher = StreamPublisher(BrokerSettings(url=amqp_url, prefix=prefix), "test evaluation harness")
    publisher.connect()
    try:
        publisher.declare_stream(stream, stream_arguments(1 << 24, "1h"))
        for index, steps in enumerate(lengths):
            publisher.publish(stream, encode_record(ExperienceRecord(
                run=uuid.uuid4().hex, episode=f"episode-{index}", chunk=0, final=True, worker="w1",
                policy_name="cartpole", policy_version=1, mode="act", first_seq=0, steps=steps,
                columns=step_columns(steps), end="done", published=time.time())))
    finally:
        publisher.close()
