"""Training: the on-policy base loop, A2C, PPO, evaluators and training runners."""
