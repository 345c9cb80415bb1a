"""Every snippet of seed 003 (the RunContext page), with maze_engine imports and tiny epochs."""

from pathlib import Path
from typing import Any

import pytest

from maze_engine import (
    A2CAlgorithmConfig,
    DistributionMapper,
    GymMazeEnv,
    LogStatsWrapper,
    ProbabilisticPolicyComposer,
    RolloutEvaluator,
)
from maze_engine.api import run_context
from maze_engine.api.run_context import RunContext

# Seed values, scaled down so each training call takes a second: n_epochs=1, epoch_length=2.
TINY = {"algorithm.n_epochs": 1, "algorithm.epoch_length": 2, "algorithm.n_rollout_steps": 20,
        "algorithm.eval_repeats": 1, "runner.n_envs": 2}


def _alg_config() -> A2CAlgorithmConfig:
    return A2CAlgorithmConfig(
        n_epochs=1,
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


def test_cli_style_initialization(tmp_path: Path) -> None:
    rc = RunContext(
        algorithm="a2c",
        overrides={"env.name": "CartPole-v0", **TINY},
        model="vector_obs",
        critic="template_state",
        silent=True, run_dir=tmp_path,
    )
    assert rc.config["env"]["name"] == "CartPole-v0"
    stats = rc.train()
    assert stats["eval"]["episode_return"]["count"] == 1
    rc.close()


def test_mixed_initialization(tmp_path: Path) -> None:
    alg_config = _alg_config()
    rc = RunContext(
        algorithm=alg_config,
        overrides={"env.name": "CartPole-v0", "runner.n_envs": 2},
        model="vector_obs",
        critic="template_state",
        silent=True, run_dir=tmp_path,
    )
    rc.train()
    assert rc.trainer.config == alg_config
    # Training continues where it stopped: "rc.train(n_epochs=10)" in the seed, one epoch here.
    rc.train(n_epochs=1)
    assert rc.trainer.epoch == 2
    rc.close()


def test_env_factory(tmp_path: Path) -> None:
    rc = RunContext(env=lambda: GymMazeEnv('CartPole-v0'), overrides=TINY, silent=True, run_dir=tmp_path)
    rc.train()
    assert (tmp_path / "state_dict.pt").is_file()
    rc.close()


def test_policy_composer_config_dictionary(tmp_path: Path) -> None:
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
    rc = RunContext(overrides={"model.policy": policy_composer_config, **TINY}, silent=True, run_dir=tmp_path)
    rc.train()
    assert isinstance(rc.policy.network(), object)
    rc.close()


def test_policy_composer_instance(tmp_path: Path) -> None:
    env = GymMazeEnv("CartPole-v1")
    policy_composer = ProbabilisticPolicyComposer(
            action_spaces_dict=env.action_spaces_dict,
            observation_spaces_dict=env.observation_spaces_dict,
            distribution_mapper=DistributionMapper(action_space=env.action_space,
                                                   distribution_mapper_config={}),
            networks=[{
                '_target_': 'maze.perception.models.built_in.flatten_concat.FlattenConcatPolicyNet',
                'non_lin': 'torch.nn.Tanh',
                'hidden_units': [222, 222]
            }],
            substeps_with_separate_agent_nets=[],
            agent_counts_dict={0: 1}
    )
    rc = RunContext(overrides={"model.policy": policy_composer, **TINY}, silent=True, run_dir=tmp_path)
    rc.train()
    assert rc.policy is policy_composer.policy
    rc.close()


@pytest.mark.parametrize("how", ["explicit", "override"])
def test_algorithm_config_explicit_or_as_override(tmp_path: Path, how: str) -> None:
    alg_config = _alg_config()
    kwargs: dict[str, Any] = ({"algorithm": alg_config} if how == "explicit"
                              else {"overrides": {"algorithm": alg_config}})
    rc = RunContext(**kwargs, silent=True, run_dir=tmp_path)
    rc.train()
    assert rc.trainer.config.epoch_length == 2
    rc.close()


def test_manual_rollout(tmp_path: Path) -> None:
    env_factory = lambda: GymMazeEnv('CartPole-v0')  # noqa: E731 - as written in the seed
    rc = run_context.RunContext(env=lambda: env_factory(), overrides=TINY, silent=True, run_dir=tmp_path)
    rc.train()

    # Run trained policy.
    env = env_factory()
    obs = env.reset()
    for _ in range(10):
        action = rc.compute_action(obs)
        obs, rewards, dones, info = env.step(action)
        if dones:
            obs = env.reset()
    rc.close()


def test_manual_evaluation(tmp_path: Path) -> None:
    cartpole_env_factory = lambda: GymMazeEnv('CartPole-v0')  # noqa: E731
    rc = RunContext(env=lambda: GymMazeEnv('CartPole-v0'), overrides=TINY, silent=True, run_dir=tmp_path)
    rc.train()

    evaluator = RolloutEvaluator(
        # Environment has to be have statistics logging capabilities for RolloutEvaluator.
        eval_env=LogStatsWrapper.wrap(cartpole_env_factory(), logging_prefix="eval"),
        n_episodes=1,
        model_selection=None
    )
    stats = evaluator.evaluate(rc.policy)
    assert stats["episode_return"]["count"] == 1
    rc.close()
