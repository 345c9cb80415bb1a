"""PPO: several passes of mini-batch updates on each rollout with the clipped surrogate objective."""

import torch

from maze_engine.training.batch import RolloutBatch
from maze_engine.training.config import PPOAlgorithmConfig
from maze_engine.training.on_policy import OnPolicyTrainer

__all__ = ["PPO", "PPOAlgorithmConfig"]


class PPO(OnPolicyTrainer):
    """Proximal policy optimization on vectorised envs (the collect/update loop lives in OnPolicyTrainer).

    Per mini-batch, with ``ratio = pi(a|s) / pi_old(a|s)``: policy loss
    ``-min(ratio * A, clip(ratio, 1 - clip_range, 1 + clip_range) * A)``, value loss ``(V(s) - R)^2``
    (optionally clipped around the rollout's values), minus the entropy bonus.
    """

    config: PPOAlgorithmConfig
    needs_old_log_probs = True

    def update(self, batch: RolloutBatch, train_policy: bool) -> dict[str, float]:
        clip_range, clip_range_vf = self.config.clip_range, self.config.clip_range_vf
        totals: dict[str, list[torch.Tensor]] = {}
        grad_norms = []
        for _ in range(self.config.n_optimization_epochs):
            for minibatch in batch.minibatches(self.config.batch_size):
                values = self.critic.predict_values(minibatch.observations)
                value_errors = (values - minibatch.returns).pow(2)
                if clip_range_vf > 0:
                    clipped = minibatch.old_values + (values - minibatch.old_values).clamp(-clip_range_vf,
                                                                                           clip_range_vf)
                    value_errors = torch.max(value_errors, (clipped - minibatch.returns).pow(2))
                value_loss = value_errors.mean()
                loss = self.config.value_loss_coef * value_loss
                parts = {"value_loss": value_loss}
                if train_policy:
                    distribution = self.policy.distribution(minibatch.observations, self.actor_id)
                    log_ratio = distribution.log_prob(minibatch.actions) - minibatch.old_log_probs
                    ratio = log_ratio.exp()
                    advantages = self.normalize(minibatch.advantages)
                    surrogate = torch.min(ratio * advantages,
                                          ratio.clamp(1.0 - clip_range, 1.0 + clip_range) * advantages)
                    policy_loss = -surrogate.mean()
                    entropy = distribution.entropy().mean()
                    loss = (loss + self.config.policy_loss_coef * policy_loss
                            - self.config.entropy_coef * entropy)
                    with torch.no_grad():
                        parts.update(policy_loss=policy_loss, entropy=entropy,
                                     approx_kl=((ratio - 1.0) - log_ratio).mean(),
                                     clip_fraction=((ratio - 1.0).abs() > clip_range).float().mean())
                grad_norms.append(self.optimizer_step(loss, train_policy))
                for name, value in parts.items():
                    totals.setdefault(name, []).append(value.detach())
        metrics = {name: torch.stack(values).mean().item() for name, values in totals.items()}
        metrics["grad_norm"] = sum(grad_norms) / len(grad_norms)
        return metrics
