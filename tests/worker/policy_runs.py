"""Tiny run directories for the policy publication tests: an untrained policy saved as training saves it."""

from pathlib import Path
from typing import Any

import torch

from maze_engine import GymMazeEnv
from maze_engine.perception.composers.model import build_model_composers
from maze_engine.policies.torch_policy import save_torch_policy


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
