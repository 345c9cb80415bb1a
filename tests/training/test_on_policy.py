"""The on-policy base through A2C and PPO: batches, burn-in, patience, schedules, devices."""

from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import torch

from maze_engine import A2C, PPO, A2CAlgorithmConfig, ConfigError, GymMazeEnv, PPOAlgorithmConfig
from maze_engine.perception.composers.model import build_model_composers
from maze_engine.training.evaluator import BestModelSelection, RolloutEvaluator
from maze_engine.training.on_policy import OnPolicyTrainer
from maze_engine.training.vector_env import InProcessVectorEnv

SMALL_MODEL = {
    "distribution_mapper_config": [],
    "policy": {"_target_": "maze_engine.ProbabilisticPolicyComposer",
               "networks": [{"_target_": "maze_engine.FlattenConcatPolicyNet", "non_lin": "torch.nn.Tanh",
                             "hidden_units": [16]}]},
    "critic": {"_target_": "maze_engine.SharedStateCriticComposer",
               "networks": [{"_target_": "maze_engine.FlattenConcatStateValueNet", "non_lin": "torch.nn.Tanh",
                             "hidden_units": [16]}]},
}


def _trainer(trainer_class: type[OnPolicyTrainer], config: Any, n_envs: int = 2, max_steps: int | None = None,
             evaluator: RolloutEvaluator | None = None,
             model_selection: BestModelSelection | None = None) -> OnPolicyTrainer:
    torch.manual_seed(0)

    def make() -> GymMazeEnv:
        return GymMazeEnv(gym.make("CartPole-v1", max_episode_steps=max_steps))

    policy_composer, critic_composer = build_model_composers(SMALL_MODEL, make())
    assert critic_composer is not None
    venv = InProcessVectorEnv.from_factory(make, n_envs)
    venv.seed(0)
    return trainer_class(config, venv, policy_composer.policy, critic_composer.critic, evaluator=evaluator,
                         model_selection=model_selection)


def _a2c(**overrides: Any) -> A2CAlgorithmConfig:
    return A2CAlgorithmConfig(**{"n_epochs": 1, "epoch_length": 2, "n_rollout_steps": 8, "eval_repeats": 0,
                                 "patience": 0, **overrides})


def _ppo(**overrides: Any) -> PPOAlgorithmConfig:
    return PPOAlgorithmConfig(**{"n_epochs": 1, "epoch_length": 2, "n_rollout_steps": 8, "eval_repeats": 0,
                                 "patience": 0, "batch_size": 5, "n_optimization_epochs": 2, **overrides})


@pytest.mark.parametrize("trainer_class, config", [(A2C, _a2c()), (PPO, _ppo())])
def test_train_updates_weights_and_reports(trainer_class: type[OnPolicyTrainer], config: Any) -> None:
    trainer = _trainer(trainer_class, config)
    before = [parameter.detach().clone() for parameter in trainer.policy_parameters]
    stats = trainer.train()
    after = list(trainer.policy_parameters)
    assert any(not torch.equal(a, b) for a, b in zip(before, after, strict=True))
    assert trainer.total_env_steps == 2 * 8 * 2 and trainer.n_updates == 2
    assert {"train", "learner", "time"} <= set(stats)
    for metric in ("policy_loss", "value_loss", "entropy", "grad_norm", "learning_rate"):
        assert np.isfinite(stats["learner"][metric]["mean"]), metric
    if trainer_class is PPO:
        assert {"approx_kl", "clip_fraction"} <= set(stats["learner"])


def test_batch_shapes_and_targets() -> None:
    trainer = _trainer(A2C, _a2c(gamma=0.9, gae_lambda=1.0), n_envs=3)
    trainer._observations = trainer.env.reset()
    rollout = trainer.collect()
    assert rollout.observations["observation"].shape == (8, 3, 4)
    assert rollout.actions["action"].shape == (8, 3)
    batch = trainer.prepare_batch(rollout)
    assert batch.size == 24 and batch.observations["observation"].dtype == torch.float32
    torch.testing.assert_close(batch.returns, batch.advantages + batch.old_values)


def test_truncated_episode_bootstraps_from_its_final_observation() -> None:
    # A 3-step time limit truncates; the target of the last step is r + gamma * V(final observation).
    trainer = _trainer(A2C, _a2c(n_rollout_steps=3, gamma=0.5), n_envs=1, max_steps=3)
    trainer._observations = trainer.env.reset()
    rollout = trainer.collect()
    assert rollout.truncated[-1, 0] and rollout.dones[-1, 0]
    batch = trainer.prepare_batch(rollout)
    with torch.no_grad():
        final_value = trainer.critic.predict_values(
            {"observation": torch.as_tensor(rollout.final_observations["observation"])})
    assert batch.returns[-1].item() == pytest.approx(1.0 + 0.5 * final_value.item(), abs=1e-5)


def test_critic_burn_in_keeps_policy_fixed() -> None:
    trainer = _trainer(PPO, _ppo(n_epochs=2, critic_burn_in_epochs=1))
    policy_before = [parameter.detach().clone() for parameter in trainer.policy_parameters]
    critic_before = [parameter.detach().clone() for parameter in trainer.critic_parameters]
    trainer.train(n_epochs=1)
    assert all(torch.equal(a, b) for a, b in zip(policy_before, trainer.policy_parameters, strict=True))
    assert any(not torch.equal(a, b) for a, b in zip(critic_before, trainer.critic_parameters, strict=True))
    assert "policy_loss" not in trainer.last_stats["learner"]
    trainer.train(n_epochs=1)  # the burn-in is over: now the policy learns
    assert any(not torch.equal(a, b) for a, b in zip(policy_before, trainer.policy_parameters, strict=True))


def test_patience_stops_training_early() -> None:
    # Evaluation scores never improve on the first one with a selection that only accepts huge gains.
    env = GymMazeEnv("CartPole-v1")
    evaluator = RolloutEvaluator(env, n_episodes=1, model_selection=BestModelSelection(min_improvement=1e9))
    config = _a2c(n_epochs=10, epoch_length=1, patience=2, eval_repeats=1)
    trainer = _trainer(A2C, config, evaluator=evaluator)
    trainer.train()
    assert trainer.epoch == 3  # the first epoch sets the best score, two more without improvement stop it
    assert trainer.stop_reason == "patience"


def test_linear_learning_rate_decays_to_zero() -> None:
    trainer = _trainer(A2C, _a2c(n_epochs=2, epoch_length=2, lr=0.01, lr_schedule="linear"))
    trainer.train()
    rates = trainer.last_stats["learner"]["learning_rate"]
    assert rates["max"] == pytest.approx(0.005) and rates["min"] == pytest.approx(0.0025)


@pytest.mark.parametrize(("calls", "expected"), [
    # One epoch per call (RunContext, the learning test): still over the 4 configured epochs.
    ([1, 1, 1, 1], [0.01, 0.0075, 0.005, 0.0025]),
    # More epochs than configured: the schedule stretches over the epochs asked for.
    ([8], [0.01 * (1 - index / 8) for index in range(8)]),
])
def test_linear_learning_rate_runs_over_the_whole_run(calls: list[int], expected: list[float]) -> None:
    trainer = _trainer(A2C, _a2c(n_epochs=4, epoch_length=1, lr=0.01, lr_schedule="linear"))
    rates = []
    for n_epochs in calls:
        trainer.train(n_epochs=n_epochs, after_epoch=lambda t: rates.append(
            t.last_stats["learner"]["learning_rate"]["mean"]))
    assert rates == pytest.approx(expected)


def test_stop_when_ends_training() -> None:
    trainer = _trainer(A2C, _a2c(n_epochs=5, epoch_length=4))
    trainer.train(stop_when=lambda t: t.n_updates >= 3)
    assert trainer.n_updates == 3 and trainer.epoch == 1
    assert trainer.stop_reason == "stop_when"


def test_stop_reasons() -> None:
    trainer = _trainer(A2C, _a2c(n_epochs=2, epoch_length=1))
    trainer.train()
    assert trainer.stop_reason == "completed" and trainer.epoch == 2


def test_patience_running_out_in_the_last_epoch_is_a_completed_run() -> None:
    env = GymMazeEnv("CartPole-v1")
    evaluator = RolloutEvaluator(env, n_episodes=1, model_selection=BestModelSelection(min_improvement=1e9))
    trainer = _trainer(A2C, _a2c(n_epochs=3, epoch_length=1, patience=2, eval_repeats=1), evaluator=evaluator)
    trainer.train()
    assert trainer.epoch == 3 and trainer.stop_reason == "completed"


def test_state_dict_round_trip() -> None:
    trainer = _trainer(PPO, _ppo(n_epochs=2))
    trainer.train()
    state = trainer.state_dict()
    other = _trainer(PPO, _ppo(n_epochs=2))
    other.load_state_dict(state)
    assert (other.epoch, other.n_updates, other.total_env_steps) == (2, 4, trainer.total_env_steps)
    assert list(other.recent_returns) == list(trainer.recent_returns)
    assert all(torch.equal(a, b) for a, b in zip(other.policy_parameters, trainer.policy_parameters,
                                                 strict=True))
    assert other.optimizer.state_dict()["state"].keys() == trainer.optimizer.state_dict()["state"].keys()


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error raised without CUDA")
def test_cuda_without_gpu_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="algorithm.device"):
        _trainer(A2C, _a2c(device="cuda"))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_training_on_cuda() -> None:
    trainer = _trainer(PPO, _ppo(device="cuda"))
    trainer.train()
    assert next(iter(trainer.policy.parameters())).device.type == "cuda"


def test_critic_is_required() -> None:
    trainer = _trainer(A2C, _a2c())
    with pytest.raises(ConfigError, match="critic"):
        A2C(_a2c(), trainer.env, trainer.policy, None)
