"""A2C: advantage actor-critic, one gradient step on each rollout."""

import torch.nn.functional as F

from maze_engine.training.batch import RolloutBatch
from maze_engine.training.config import A2CAlgorithmConfig
from maze_engine.training.on_policy import OnPolicyTrainer

__all__ = ["A2C", "A2CAlgorithmConfig"]


class A2C(OnPolicyTrainer):
    """Advantage actor-critic on vectorised envs (the collect/update loop lives in OnPolicyTrainer).

    The loss is ``policy_loss_coef * -(A * log pi(a|s)) + value_loss_coef * (V(s) - R)^2
    - entropy_coef * H(pi(.|s))``, averaged over the rollout.
    """

    config: A2CAlgorithmConfig

    def update(self, batch: RolloutBatch, train_policy: bool) -> dict[str, float]:
        values = self.critic.predict_values(batch.observations)
        value_loss = F.mse_loss(values, batch.returns)
        loss = self.config.value_loss_coef * value_loss
        metrics = {"value_loss": value_loss.item()}
        if train_policy:
            distribution = self.policy.distribution(batch.observations, self.actor_id)
            log_probs = distribution.log_prob(batch.actions)
            entropy = distribution.entropy().mean()
            advantages = self.normalize(batch.advantages)
            policy_loss = -(advantages * log_probs).mean()
            loss = loss + self.config.policy_loss_coef * policy_loss - self.config.entropy_coef * entropy
            metrics.update(policy_loss=policy_loss.item(), entropy=entropy.item())
        metrics["grad_norm"] = self.optimizer_step(loss, train_policy)
        return metrics

