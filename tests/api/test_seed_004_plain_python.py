"""Every snippet of seed 004 (plain Python training, high level), with maze_engine imports and tiny epochs.

One deviation: the seed's value net receives ``obs_shapes=<shape tuple>`` and then indexes it with
``'observation'``, and uses an undefined ``observation_space``; here it receives the
``{'observation': shape}`` dict its constructor expects and ``observation_space`` is the env's.
"""

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import gymnasium as gym
import pytest
import torch
from torch import nn

import maze_engine
import maze_engine.api.run_context
from maze_engine import (
    A2CAlgorithmConfig,
    DistributionMapper,
    GymMazeEnv,
    LogStatsWrapper,
    ProbabilisticPolicyComposer,
    RolloutEvaluator,
    SharedStateCriticComposer,
    TorchModelBlock,
)
from maze_engine.api import run_context

Dict = dict


def cartpole_env_factory():
    """ Env factory for the cartpole MazeEnv """
    # Registered gym environments can be instantiated first and then provided to GymMazeEnv:
    cartpole_env = gym.make("CartPole-v0")
    maze_env = GymMazeEnv(env=cartpole_env)

    # Another possibility is to supply the gym env string to GymMazeEnv directly:
    maze_env = GymMazeEnv(env="CartPole-v0")

    return maze_env


class CartpolePolicyNet(nn.Module):
    """ Simple linear policy net for demonstration purposes. """
    def __init__(self, obs_shapes: Dict[str, Sequence[int]], action_logit_shapes: Dict[str, Sequence[int]]):
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(
                in_features=obs_shapes['observation'][0],
                out_features=action_logit_shapes['action'][0]
            )
        )

    def forward(self, x_dict: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
        # Since x_dict has to be a dictionary in Maze, we extract the input for the network.
        x = x_dict['observation']

        # Do the forward pass.
        logits = self.net(x)

        # Since the return value has to be a dict again, put the
        # forward pass result into a dict with the correct key.
        logits_dict = {'action': logits}

        return logits_dict


class CartpoleValueNet(nn.Module):
    """ Simple linear value net for demonstration purposes. """
    def __init__(self, obs_shapes: Dict[str, Sequence[int]]):
        super().__init__()
        self.value_net = nn.Sequential(nn.Linear(in_features=obs_shapes['observation'][0], out_features=1))

    def forward(self, x_dict: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
        """ Forward method. """
        # The same as for the policy can be said about the value
        # net: Inputs and outputs have to be dicts.
        x = x_dict['observation']

        value = self.value_net(x)

        value_dict = {'value': value}
        return value_dict


def _algorithm_config() -> A2CAlgorithmConfig:
    return A2CAlgorithmConfig(
        n_epochs=1,  # seed: 5
        epoch_length=2,  # seed: 25
        deterministic_eval=False,
        eval_repeats=2,
        patience=15,
        critic_burn_in_epochs=0,
        n_rollout_steps=20,  # seed: 100
        lr=0.0005,
        gamma=0.98,
        gae_lambda=1.0,
        policy_loss_coef=1.0,
        value_loss_coef=0.5,
        entropy_coef=0.00025,
        max_grad_norm=0.0,
        device='cpu'
    )


def _composers(distribution_mapper_kind: str = "default") -> tuple[Any, Any]:
    env = cartpole_env_factory()
    policy_net = CartpolePolicyNet(
        obs_shapes={'observation': env.observation_space.spaces['observation'].shape},
        action_logit_shapes={'action': (env.action_space.spaces['action'].n,)}
    )
    policy_net = TorchModelBlock(
        in_keys='observation',
        out_keys='action',
        in_shapes=env.observation_space.spaces['observation'].shape,
        in_num_dims=[2],
        out_num_dims=2,
        net=policy_net
    )
    policy_networks = [policy_net]
    if distribution_mapper_kind == "default":
        distribution_mapper = DistributionMapper(action_space=env.action_space, distribution_mapper_config={})
    else:
        action_space = env.action_space
        distribution_mapper = DistributionMapper(
            action_space=action_space,
            distribution_mapper_config=[{
                "action_space": gym.spaces.Discrete,
                "distribution": "maze.distributions.categorical.CategoricalProbabilityDistribution"}])
    policy_composer = ProbabilisticPolicyComposer(
        action_spaces_dict=env.action_spaces_dict,
        observation_spaces_dict=env.observation_spaces_dict,
        distribution_mapper=distribution_mapper,
        networks=policy_networks,
        # We have only one agent and network, thus this is an empty list.
        substeps_with_separate_agent_nets=[],
        # We have only one step and one agent.
        agent_counts_dict={0: 1}
    )
    observation_space = env.observation_space
    value_networks = {
        0: TorchModelBlock(
            in_keys='observation', out_keys='value',
            in_shapes=observation_space.spaces['observation'].shape,
            in_num_dims=[2],
            out_num_dims=2,
            net=CartpoleValueNet(
                obs_shapes={'observation': env.observation_space.spaces['observation'].shape})
        )
    }
    critic_composer = SharedStateCriticComposer(
        observation_spaces_dict=env.observation_spaces_dict,
        agent_counts_dict={0: 1},
        networks=value_networks,
        stack_observations=True
    )
    return policy_composer, critic_composer


def test_default_model_training(tmp_path: Path) -> None:
    algorithm_config = _algorithm_config()
    rc = maze_engine.api.run_context.RunContext(env=cartpole_env_factory, algorithm=algorithm_config,
                                                silent=True, run_dir=tmp_path)
    rc.train()
    rc.close()


@pytest.mark.parametrize("mapper", ["default", "explicit categorical"])
def test_custom_policy(tmp_path: Path, mapper: str) -> None:
    policy_composer, _ = _composers(mapper)
    rc = maze_engine.api.run_context.RunContext(
        env=cartpole_env_factory,
        algorithm=_algorithm_config(),
        policy=policy_composer,
        silent=True, run_dir=tmp_path,
    )
    rc.train()
    assert rc.policy is policy_composer.policy
    rc.close()


def test_custom_policy_and_critic_then_local_runner_and_evaluation(tmp_path: Path) -> None:
    policy_composer, critic_composer = _composers()
    algorithm_config = _algorithm_config()
    rc = run_context.RunContext(
        env=cartpole_env_factory,
        algorithm=algorithm_config,
        policy=policy_composer,
        critic=critic_composer,
        silent=True, run_dir=tmp_path / "dev",
    )
    rc.train()
    assert rc.trainer.critic is critic_composer.critic
    rc.close()

    # Distributed training: the envs live in worker processes.
    rc = run_context.RunContext(
        env=cartpole_env_factory,
        algorithm=algorithm_config,
        policy=policy_composer,
        critic=critic_composer,
        runner="local",
        silent=True, run_dir=tmp_path / "local",
    )
    rc.train(n_epochs=1)

    evaluator = RolloutEvaluator(
        eval_env=LogStatsWrapper.wrap(cartpole_env_factory(), logging_prefix="eval"),
        n_episodes=3,
        model_selection=None
    )
    stats = evaluator.evaluate(rc.policy)
    assert stats["episode_return"]["count"] == 3
    rc.close()
