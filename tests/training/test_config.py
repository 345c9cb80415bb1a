"""Algorithm and runner configs: seed-compatible fields, validation naming the field, composed YAML."""

from dataclasses import fields
from typing import Any

import pytest
from omegaconf import OmegaConf

from maze_engine import A2CAlgorithmConfig, ConfigError, PPOAlgorithmConfig
from maze_engine.config import compose_config
from maze_engine.training.launch import build_algorithm_config
from maze_engine.training.runners import TrainingRunnerConfig

SEED_FIELDS = ["n_epochs", "epoch_length", "deterministic_eval", "eval_repeats", "patience",
               "critic_burn_in_epochs", "n_rollout_steps", "lr", "gamma", "gae_lambda", "policy_loss_coef",
               "value_loss_coef", "entropy_coef", "max_grad_norm", "device"]

SEED_VALUES: dict[str, Any] = dict(
    n_epochs=1, epoch_length=25, deterministic_eval=False, eval_repeats=2, patience=15,
    critic_burn_in_epochs=0, n_rollout_steps=100, lr=0.0005, gamma=0.98, gae_lambda=1.0,
    policy_loss_coef=1.0, value_loss_coef=0.5, entropy_coef=0.00025, max_grad_norm=0.0, device="cpu")


def test_seed_fields_come_first_and_in_order() -> None:
    names = [field.name for field in fields(A2CAlgorithmConfig)]
    assert names[:len(SEED_FIELDS)] == SEED_FIELDS
    ppo_names = [field.name for field in fields(PPOAlgorithmConfig)]
    assert {"batch_size", "n_optimization_epochs", "clip_range"} <= set(ppo_names)


def test_seed_call_works() -> None:
    config = A2CAlgorithmConfig(**SEED_VALUES)
    assert config.lr == 0.0005 and config.lr_schedule == "constant"
    ppo = PPOAlgorithmConfig(**SEED_VALUES, batch_size=100, n_optimization_epochs=4, clip_range=0.2)
    assert ppo.clip_range == 0.2


@pytest.mark.parametrize("field, value", [
    ("n_epochs", -1), ("epoch_length", 0), ("n_rollout_steps", 1.5), ("lr", 0), ("gamma", 1.5),
    ("gae_lambda", -0.1), ("entropy_coef", -1), ("max_grad_norm", float("nan")), ("device", "tpu"),
    ("deterministic_eval", "yes"), ("lr_schedule", "cosine"), ("eval_repeats", True)])
def test_bad_values_name_the_field(field: str, value: Any) -> None:
    with pytest.raises(ConfigError, match=f"algorithm.{field}"):
        A2CAlgorithmConfig(**{**SEED_VALUES, field: value})


@pytest.mark.parametrize("field, value", [("batch_size", 0), ("n_optimization_epochs", 0),
                                          ("clip_range", 0.0)])
def test_bad_ppo_values_name_the_field(field: str, value: Any) -> None:
    with pytest.raises(ConfigError, match=f"algorithm.{field}"):
        PPOAlgorithmConfig(**{field: value})


@pytest.mark.parametrize("algorithm, runner",
                         [("a2c", "dev"), ("a2c", "local"), ("ppo", "dev"), ("ppo", "local")])
def test_every_training_config_composes_and_builds(algorithm: str, runner: str) -> None:
    cfg = compose_config("conf_train", [f"algorithm={algorithm}", f"runner={runner}"])
    built = build_algorithm_config(cfg.algorithm)
    assert type(built) is {"a2c": A2CAlgorithmConfig, "ppo": PPOAlgorithmConfig}[algorithm]
    # The YAML holds the dataclass defaults, so Python and CLI users start from the same values.
    assert built == type(built)()
    assert TrainingRunnerConfig.from_config(cfg.runner).type == runner
    assert OmegaConf.select(cfg, "model.critic._target_")


def test_schema_rejects_bad_override_at_compose_time() -> None:
    with pytest.raises(Exception, match="algorithm.lr"):
        compose_config("conf_train", ["algorithm.lr=fast"])
    with pytest.raises(Exception, match="no_such_field"):
        compose_config("conf_train", ["algorithm.no_such_field=1"])
    # Forcing a new key past Hydra still fails when the config object is built.
    forced = compose_config("conf_train", ["+algorithm.no_such_field=1"])
    with pytest.raises(ConfigError, match="no_such_field"):
        build_algorithm_config(forced.algorithm)


def test_algorithm_mapping_and_names() -> None:
    assert isinstance(build_algorithm_config("ppo"), PPOAlgorithmConfig)
    assert isinstance(build_algorithm_config({"lr": 0.01, "batch_size": 32}), PPOAlgorithmConfig)
    with pytest.raises(ConfigError, match="algorithm.learning_rate"):
        build_algorithm_config({"learning_rate": 0.01})
    with pytest.raises(ConfigError, match="algorithm"):
        build_algorithm_config("sac")


@pytest.mark.parametrize("config, field", [
    ({"type": "cluster"}, "runner.type"), ({"type": "dev", "n_envs": 0}, "runner.n_envs"),
    ({"type": "local", "start_method": "thread"}, "runner.start_method"),
    ({"type": "dev", "concurrency": 2}, "runner.concurrency"),
    ({"_target_": "maze_engine.rollout.parallel.ParallelRolloutRunner", "n_episodes": 2}, "runner")])
def test_bad_runner_config_names_the_key(config: dict[str, Any], field: str) -> None:
    with pytest.raises(ConfigError, match=field):
        TrainingRunnerConfig.from_config(config)
