"""The model and critic config groups compose with Hydra and build working composers."""

from pathlib import Path

import pytest
from hydra import compose, initialize_config_module
from omegaconf import DictConfig

from maze_engine import (
    GymMazeEnv,
    ProbabilisticPolicyComposer,
    SharedStateCriticComposer,
    StateCriticComposer,
    load_torch_policy,
)
from maze_engine.core.errors import ConfigError
from maze_engine.perception.composers.model import build_model_composers
from maze_engine.policies.torch_io import save_torch_policy


def _model_config(model: str, critic: str) -> DictConfig:
    with initialize_config_module(config_module="maze_engine.conf", version_base=None):
        return compose(overrides=[f"+model={model}", f"+critic={critic}"]).model


@pytest.mark.parametrize(("model", "hidden"), [("vector_obs", 256), ("flatten_concat", 64)])
@pytest.mark.parametrize(("critic", "critic_type"), [("template_state", SharedStateCriticComposer),
                                                      ("template_step_state", StateCriticComposer)])
@pytest.mark.parametrize("env_name", ["CartPole-v1", "Pendulum-v1"])
def test_config_groups_build_composers_that_act(model: str, hidden: int, critic: str, critic_type: type,
                                                env_name: str) -> None:
    config = _model_config(model, critic)
    env = GymMazeEnv(env_name)
    policy_composer, critic_composer = build_model_composers(config, env)
    assert isinstance(policy_composer, ProbabilisticPolicyComposer)
    assert isinstance(critic_composer, critic_type) and critic_composer is not None
    assert policy_composer.policy.network().body.mlp[0].out_features == hidden
    observation = env.reset()
    assert env.action_space.contains(policy_composer.policy.compute_action(observation))
    assert isinstance(critic_composer.critic.predict_value(observation), float)


def test_composed_config_round_trips_through_the_run_directory(tmp_path: Path) -> None:
    config = _model_config("flatten_concat", "template_state")
    env = GymMazeEnv("CartPole-v1")
    policy_composer, critic_composer = build_model_composers(config, env)
    assert critic_composer is not None
    save_torch_policy(tmp_path, policy_composer.policy, config, env.observation_spaces_dict,
                      env.action_spaces_dict, critic=critic_composer.critic)
    loaded = load_torch_policy(tmp_path, env.action_spaces_dict, env.observation_spaces_dict)
    observation = env.reset()
    assert loaded.compute_action(observation, deterministic=True) == \
        policy_composer.policy.compute_action(observation, deterministic=True)


def test_composer_instances_pass_through_and_mistakes_are_named() -> None:
    env = GymMazeEnv("CartPole-v1")
    config = _model_config("flatten_concat", "template_state")
    policy_composer, _ = build_model_composers(config, env)
    same, critic = build_model_composers({"policy": policy_composer}, env)
    assert same is policy_composer and critic is None
    with pytest.raises(ConfigError, match="model.policy: missing"):
        build_model_composers({"distribution_mapper_config": []}, env)
    with pytest.raises(ConfigError, match="model.polcy: unexpected key"):
        build_model_composers({"polcy": {}}, env)
    with pytest.raises(ConfigError, match=r"model.critic: expected a critic composer"):
        not_a_composer = {"_target_": "maze_engine.FlattenConcatStateValueNet", "obs_shapes": {"x": [2]}}
        build_model_composers({"policy": policy_composer, "critic": not_a_composer}, env)
