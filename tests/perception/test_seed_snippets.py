"""The perception code of seeds 003 and 004, run with maze_engine imports, acting on CartPole.

Differences from the seed text, each forced by the seed itself: the seed passes
``obs_shapes=env.observation_space.spaces['observation'].shape`` (a tuple) to ``CartpoleValueNet``, whose own
constructor then indexes it with ``['observation']``; that fails in any framework, so the dict form is used.
``observation_space`` (undefined in the seed) is ``env.observation_space``.
"""

from typing import Dict, Sequence  # noqa: UP035 - kept as the seed writes it

import gymnasium as gym
import torch
from torch import nn

from maze_engine import (
    DistributionMapper,
    GymMazeEnv,
    ProbabilisticPolicyComposer,
    SharedStateCriticComposer,
    TorchModelBlock,
)


class CartpolePolicyNet(nn.Module):
    """ Simple linear policy net for demonstration purposes. """
    def __init__(self, obs_shapes: Dict[str, Sequence[int]], action_logit_shapes: Dict[str, Sequence[int]]):  # noqa: UP006
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(
                in_features=obs_shapes['observation'][0],
                out_features=action_logit_shapes['action'][0]
            )
        )

    def forward(self, x_dict: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:  # noqa: UP006
        x = x_dict['observation']
        logits = self.net(x)
        logits_dict = {'action': logits}
        return logits_dict


class CartpoleValueNet(nn.Module):
    """ Simple linear value net for demonstration purposes. """
    def __init__(self, obs_shapes: Dict[str, Sequence[int]]):  # noqa: UP006
        super().__init__()
        self.value_net = nn.Sequential(nn.Linear(in_features=obs_shapes['observation'][0], out_features=1))

    def forward(self, x_dict: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:  # noqa: UP006
        """ Forward method. """
        x = x_dict['observation']
        value = self.value_net(x)
        value_dict = {'value': value}
        return value_dict


def cartpole_env_factory() -> GymMazeEnv:
    """ Env factory for the cartpole MazeEnv """
    cartpole_env = gym.make("CartPole-v1")
    maze_env = GymMazeEnv(env=cartpole_env)
    maze_env = GymMazeEnv(env="CartPole-v1")
    return maze_env


def _roll(policy_composer: ProbabilisticPolicyComposer, steps: int = 20) -> None:
    env = cartpole_env_factory()
    env.seed(0)
    observation = env.reset()
    for _ in range(steps):
        action = policy_composer.policy.compute_action(observation)
        assert env.action_space.contains(action)
        observation, _, done, _ = env.step(action)
        if done:
            observation = env.reset()


def test_seed_004_custom_policy_and_critic() -> None:
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
    policy_networks = [policy_net]  # Alternative: {0: policy_net}

    distribution_mapper = DistributionMapper(action_space=env.action_space, distribution_mapper_config={})
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
        substeps_with_separate_agent_nets=[],
        agent_counts_dict={0: 1}
    )
    _roll(policy_composer)

    observation_space = env.observation_space
    value_networks = {
        0: TorchModelBlock(
            in_keys='observation', out_keys='value',
            in_shapes=observation_space.spaces['observation'].shape,
            in_num_dims=[2],
            out_num_dims=2,
            net=CartpoleValueNet(obs_shapes={'observation': observation_space.spaces['observation'].shape})
        )
    }
    critic_composer = SharedStateCriticComposer(
        observation_spaces_dict=env.observation_spaces_dict,
        agent_counts_dict={0: 1},
        networks=value_networks,
        stack_observations=True
    )
    observation = env.reset()
    single = critic_composer.critic.predict_value(observation)
    batch = {"observation": torch.as_tensor(observation["observation"]).repeat(3, 1)}
    values = critic_composer.critic.predict_values(batch)
    assert values.shape == (3,)
    assert abs(float(values[0].detach()) - single) < 1e-6
    # The block also serves one observation without a batch dimension.
    unbatched = value_networks[0]({"observation": torch.as_tensor(observation["observation"])})
    assert unbatched["value"].shape == (1,)


def test_seed_004_custom_nets_as_configs() -> None:
    """The same custom nets given as classes: the composer passes the seed's ``action_logit_shapes``."""
    env = cartpole_env_factory()
    policy_composer = ProbabilisticPolicyComposer(
        action_spaces_dict=env.action_spaces_dict, observation_spaces_dict=env.observation_spaces_dict,
        distribution_mapper=None, networks=[CartpolePolicyNet], substeps_with_separate_agent_nets=[],
        agent_counts_dict={0: 1})
    _roll(policy_composer)
    critic = SharedStateCriticComposer(env.observation_spaces_dict, {0: 1}, [CartpoleValueNet], False).critic
    assert critic.predict_values({"observation": torch.zeros(2, 4)}).shape == (2,)


def test_seed_003_policy_composer_config_dict_and_instance() -> None:
    env = cartpole_env_factory()
    policy_composer_config = {
        '_target_': 'maze.perception.models.policies.ProbabilisticPolicyComposer',
        'networks': [{
            '_target_': 'maze.perception.models.built_in.flatten_concat.FlattenConcatPolicyNet',
            'non_lin': 'torch.nn.Tanh',
            'hidden_units': [256, 256]
        }],
        "substeps_with_separate_agent_nets": [],
        "agent_counts_dict": {0: 1}
    }
    from maze_engine import instantiate

    from_config = instantiate(policy_composer_config, ProbabilisticPolicyComposer,
                              action_spaces_dict=env.action_spaces_dict,
                              observation_spaces_dict=env.observation_spaces_dict)
    _roll(from_config)

    policy_composer = ProbabilisticPolicyComposer(
        action_spaces_dict=env.action_spaces_dict,
        observation_spaces_dict=env.observation_spaces_dict,
        distribution_mapper=DistributionMapper(action_space=env.action_space, distribution_mapper_config={}),
        networks=[{
            '_target_': 'maze.perception.models.built_in.flatten_concat.FlattenConcatPolicyNet',
            'non_lin': 'torch.nn.Tanh',
            'hidden_units': [222, 222]
        }],
        substeps_with_separate_agent_nets=[],
        agent_counts_dict={0: 1}
    )
    assert policy_composer.policy.network().body.mlp[0].out_features == 222
    _roll(policy_composer)
