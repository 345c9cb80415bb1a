"""Acting on a batch of observations: numpy in, one policy forward pass, numpy out.

Trainers and evaluators call ``batch_actions`` once per step for all their envs. Torch policies (anything with
``distribution(obs_tensors, actor_id)``) get one forward pass; any other StructuredPolicy falls back to its
``compute_actions``.
"""

from typing import Any

import numpy as np
import torch

from maze_engine.core.actor_id import ActorID

Batch = dict[str, np.ndarray]


def policy_device(policy: Any) -> torch.device:
    """The device of a torch policy's parameters (cpu for parameterless or non-torch policies)."""
    parameters = getattr(policy, "parameters", None)
    if parameters is not None:
        for parameter in parameters():
            return torch.device(parameter.device)
    return torch.device("cpu")


def to_tensors(batch: Batch, device: torch.device | str = "cpu") -> dict[str, torch.Tensor]:
    """Arrays as tensors on ``device``; float64 becomes float32 (the nets' dtype), other dtypes stay."""
    tensors = {}
    for key, value in batch.items():
        if value.dtype == np.float64:
            value = value.astype(np.float32)
        tensors[key] = torch.as_tensor(value, device=device)
    return tensors


def to_arrays(tensors: dict[str, Any]) -> Batch:
    """Tensors (possibly on a GPU) as numpy arrays."""
    return {key: value.detach().cpu().numpy() if isinstance(value, torch.Tensor) else np.asarray(value)
            for key, value in tensors.items()}


def batch_actions(policy: Any, observations: Batch, actor_id: ActorID, deterministic: bool = False,
                  device: torch.device | str | None = None) -> Batch:
    """Actions for a stacked batch of observations (leading axis = env), stacked the same way."""
    if hasattr(policy, "distribution"):
        with torch.inference_mode():
            tensors = to_tensors(observations, device or policy_device(policy))
            distribution = policy.distribution(tensors, actor_id)
            actions = distribution.deterministic_sample() if deterministic else distribution.sample()
        return to_arrays(actions)
    n_envs = len(next(iter(observations.values())))
    per_env = [{key: value[index] for key, value in observations.items()} for index in range(n_envs)]
    actions_list = policy.compute_actions(per_env, actor_id, deterministic)
    return {key: np.stack([np.asarray(action[key]) for action in actions_list]) for key in actions_list[0]}
