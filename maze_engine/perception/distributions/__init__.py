"""Action distributions over torch logits, and the DistributionMapper choosing one per action key."""
