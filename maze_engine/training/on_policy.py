"""The on-policy base: collect a rollout from vectorised envs, turn it into a batch, update; epochs of that.

A2C and PPO subclass ``OnPolicyTrainer`` and implement ``update`` only. The base owns everything around it:
collection (one batched policy forward pass per step, no gradients), value targets (one critic forward pass
over the whole rollout, GAE with bootstrapping from truncated episodes' final observations), gradient
clipping, critic burn-in and the statistics of each epoch (docs/training.md lists the metric names). The
epoch loop, the learning rate schedule, evaluation, model selection and patience are ``EpochTrainer``'s.
"""

import math
import time
from abc import abstractmethod
from collections import deque
from collections.abc import Callable
from typing import Any, ClassVar

import numpy as np
import torch

from maze_engine.core.errors import ConfigError
from maze_engine.training.acting import batch_actions, to_tensors
from maze_engine.training.batch import Rollout, RolloutBatch
from maze_engine.training.config import AlgorithmConfig
from maze_engine.training.epochs import EpochTrainer, Stats, make_adam, resolve_device, single, step_optimizer
from maze_engine.training.evaluator import BestModelSelection, RolloutEvaluator
from maze_engine.training.gae import add_truncation_bootstrap, compute_gae
from maze_engine.training.reporting import TrainingReporter
from maze_engine.training.vector_env import VectorEnv
from maze_engine.wrappers.logging.log_stats import EPISODE_RETURN

__all__ = ["OnPolicyTrainer", "Stats", "resolve_device"]


class OnPolicyTrainer(EpochTrainer):
    """Trains ``policy`` and ``critic`` on rollouts from ``env``; subclasses implement ``update``.

    ``evaluator`` runs after every epoch and its mean return drives ``model_selection`` (which saves the best
    policy) and ``patience``; without an evaluator the training episodes' mean return is used instead.
    """

    needs_old_log_probs: ClassVar[bool] = False
    """Whether ``update`` needs the log-probabilities the actions had at collection time."""

    def __init__(self, algorithm_config: AlgorithmConfig, env: VectorEnv, policy: Any, critic: Any,
                 evaluator: RolloutEvaluator | None = None, model_selection: BestModelSelection | None = None,
                 reporter: TrainingReporter | None = None) -> None:
        if not isinstance(algorithm_config, AlgorithmConfig):
            raise ConfigError(f"algorithm_config: expected an AlgorithmConfig (e.g. A2CAlgorithmConfig), "
                              f"got {type(algorithm_config).__name__}")
        if critic is None:
            raise ConfigError("critic: the on-policy trainers need a critic "
                              "(model.critic, e.g. critic=template_state)")
        algorithm_config.validate()
        super().__init__(algorithm_config, policy, evaluator, model_selection, reporter)
        self.config: AlgorithmConfig = algorithm_config
        self.env = env
        self.critic = critic.to(self.device) or critic
        self.actor_id = env.actor_id
        self.policy_parameters = list(policy.parameters())
        self.critic_parameters = list(critic.parameters())
        policy_ids = {id(parameter) for parameter in self.policy_parameters}
        shared = [parameter for parameter in self.critic_parameters if id(parameter) in policy_ids]
        if shared:
            raise ConfigError("critic: shares parameters with the policy; use separate networks")
        self.optimizer: torch.optim.Optimizer = make_adam(self.policy_parameters + self.critic_parameters,
                                                          algorithm_config.lr)
        self.recent_returns: deque[float] = deque(maxlen=100)
        """Returns of the last 100 finished training episodes."""
        self._observations: dict[str, np.ndarray] | None = None

    # ----------------------------------------------------------------------------------------------- loop
    @property
    def burn_in_epochs(self) -> int:
        return self.config.critic_burn_in_epochs

    def updates_per_epoch(self) -> int:
        return self.config.epoch_length

    def before_training(self) -> None:
        if self._observations is None:
            self._observations = self.env.reset()

    def close(self) -> None:
        self.env.close()

    def state_dict(self) -> dict[str, Any]:
        """Everything training continues from: weights, optimizer, counters, model selection (no env)."""
        return {"epoch": self.epoch, "n_updates": self.n_updates, "total_env_steps": self.total_env_steps,
                "policy": self.policy.state_dict(), "critic": self.critic.state_dict(),
                "optimizer": self.optimizer.state_dict(),
                "recent_returns": [float(value) for value in self.recent_returns],
                "model_selection": (self.model_selection.state_dict() if self.model_selection is not None
                                    else None)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from ``state_dict()``; the envs start fresh episodes at the next ``train``."""
        self.policy.load_state_dict(state["policy"])
        self.critic.load_state_dict(state["critic"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.epoch = int(state["epoch"])
        self.n_updates = int(state["n_updates"])
        self.total_env_steps = int(state["total_env_steps"])
        self.recent_returns.clear()
        self.recent_returns.extend(float(value) for value in state["recent_returns"])
        if self.model_selection is not None and state.get("model_selection") is not None:
            self.model_selection.load_state_dict(state["model_selection"])
        self._observations = None

    def _train_epoch(self, stop_when: Callable[["OnPolicyTrainer"], bool] | None) -> bool:
        train_policy = self.epoch >= self.config.critic_burn_in_epochs
        started, steps_before = time.perf_counter(), self.total_env_steps

        def collect_and_update() -> dict[str, Any]:
            batch = self.prepare_batch(self.collect())
            self.policy.train()  # collecting put it in evaluation mode
            return self.update(batch, train_policy)

        learner, stopped = self.run_updates((collect_and_update for _ in range(self.config.epoch_length)),
                                            self.config.epoch_length, stop_when)
        seconds = time.perf_counter() - started
        steps = self.total_env_steps - steps_before
        sections: dict[str, Stats] = {
            "train": {name: aggregate.summary() for name, aggregate in self.env.epoch_aggregates().items()},
            "learner": {name: aggregate.summary() for name, aggregate in learner.items()},
            "time": {"steps_per_second": single(steps / seconds if seconds > 0 else math.nan),
                     "epoch_seconds": single(seconds),
                     "total_env_steps": single(float(self.total_env_steps))}}
        self.publish_epoch(sections, sections["train"].get(EPISODE_RETURN, {}).get("mean", math.nan))
        return stopped

    # -------------------------------------------------------------------------------------------- collect
    def collect(self) -> Rollout:
        """Step all envs ``n_rollout_steps`` times with the current policy (sampled actions, no gradients)."""
        assert self._observations is not None, "train() resets the envs before collecting"
        n_steps, n_envs = self.config.n_rollout_steps, self.env.n_envs
        observation_buffers = {key: np.empty((n_steps, *value.shape), value.dtype)
                               for key, value in self._observations.items()}
        action_buffers: dict[str, np.ndarray] = {}
        rewards = np.empty((n_steps, n_envs), np.float32)
        dones = np.empty((n_steps, n_envs), bool)
        truncated = np.empty((n_steps, n_envs), bool)
        final_observations: list[dict[str, np.ndarray]] = []
        truncated_index: list[tuple[int, int]] = []
        observations = self._observations
        self.policy.eval()
        threads = torch.get_num_threads()
        # Small per-step forward passes run faster on one thread than with the pool's hand-offs.
        torch.set_num_threads(1)
        try:
            for t in range(n_steps):
                for key, value in observations.items():
                    observation_buffers[key][t] = value
                actions = batch_actions(self.policy, observations, self.actor_id, device=self.device)
                if not action_buffers:
                    action_buffers = {key: np.empty((n_steps, *value.shape), value.dtype)
                                      for key, value in actions.items()}
                for key, value in actions.items():
                    action_buffers[key][t] = value
                step = self.env.step(actions)
                rewards[t], dones[t], truncated[t] = step.rewards, step.dones, step.truncated
                for index, final in step.final_observations.items():
                    truncated_index.append((t, index))
                    final_observations.append(final)
                self.recent_returns.extend(episode.episode_return for episode in step.finished_episodes)
                observations = step.observations
        finally:
            torch.set_num_threads(threads)
        self._observations = observations
        self.total_env_steps += n_steps * n_envs
        finals = {key: np.stack([final[key] for final in final_observations]) if final_observations
                  else np.empty((0, *value.shape[1:]), value.dtype) for key, value in observations.items()}
        return Rollout(observation_buffers, action_buffers, rewards, dones, truncated, finals,
                       np.asarray(truncated_index, dtype=np.int64).reshape(-1, 2), observations)

    def prepare_batch(self, rollout: Rollout) -> RolloutBatch:
        """Values, GAE advantages and returns for ``rollout``, flattened to one batch on the device."""
        n_steps, n_envs = rollout.n_steps, rollout.n_envs
        n_samples, n_finals = n_steps * n_envs, len(rollout.truncated_index)
        observations = {key: value.reshape(n_samples, *value.shape[2:])
                        for key, value in rollout.observations.items()}
        # One critic pass over the rollout, the observations after it and the truncated episodes' last ones.
        everything = {key: np.concatenate([value, rollout.last_observations[key],
                                           rollout.final_observations[key]])
                      for key, value in observations.items()}
        with torch.no_grad():
            all_values = self.critic.predict_values(to_tensors(everything, self.device)).float().cpu().numpy()
        values = all_values[:n_samples].reshape(n_steps, n_envs)
        last_values = all_values[n_samples:n_samples + n_envs]
        final_values = np.zeros_like(values)
        if n_finals:
            index = rollout.truncated_index
            final_values[index[:, 0], index[:, 1]] = all_values[-n_finals:]
        rewards = add_truncation_bootstrap(rollout.rewards, rollout.truncated, final_values,
                                           self.config.gamma)
        advantages, returns = compute_gae(rewards, values, rollout.dones, last_values, self.config.gamma,
                                          self.config.gae_lambda)
        observation_tensors = to_tensors(observations, self.device)
        action_tensors = to_tensors({key: value.reshape(n_samples, *value.shape[2:])
                                     for key, value in rollout.actions.items()}, self.device)
        old_log_probs = torch.empty(0, device=self.device)
        if self.needs_old_log_probs:
            with torch.no_grad():
                distribution = self.policy.distribution(observation_tensors, self.actor_id)
                old_log_probs = distribution.log_prob(action_tensors)
        return RolloutBatch(
            observations=observation_tensors, actions=action_tensors,
            advantages=torch.as_tensor(advantages.reshape(n_samples), device=self.device),
            returns=torch.as_tensor(returns.reshape(n_samples), device=self.device),
            old_values=torch.as_tensor(values.reshape(n_samples), device=self.device),
            old_log_probs=old_log_probs)

    # --------------------------------------------------------------------------------------------- update
    @abstractmethod
    def update(self, batch: RolloutBatch, train_policy: bool) -> dict[str, float]:
        """Improve policy and critic on ``batch``; return learner metrics (``policy_loss``, ``value_loss``,
        ``entropy``, ``grad_norm``...). With ``train_policy`` False (critic burn-in) only the critic
        learns."""

    def normalize(self, advantages: torch.Tensor) -> torch.Tensor:
        """Advantages scaled to zero mean and unit std when the config asks for it."""
        if not self.config.normalize_advantages or advantages.numel() < 2:
            return advantages
        return (advantages - advantages.mean()) / (advantages.std() + 1e-8)

    def optimizer_step(self, loss: torch.Tensor, train_policy: bool) -> float:
        """Backpropagate ``loss``, clip the gradient norm, step; return the norm before clipping."""
        if train_policy:
            return step_optimizer(self.optimizer, loss, self.policy_parameters + self.critic_parameters,
                                  self.config.max_grad_norm)
        return step_optimizer(self.optimizer, loss, self.critic_parameters, self.config.max_grad_norm,
                              frozen=self.policy_parameters)
