"""Behavioural cloning: the policy learns to take a dataset's actions, by maximum likelihood.

The dataset is a Minari dataset (``dataset=<id or path>``, ``records.minari``) of the observations a policy
saw and the actions taken on them, in the spaces of the policy being trained. Whole episodes are held out for
validation. An epoch is one pass over the training split in shuffled mini-batches; after it come the
validation loss, evaluation in the env (the on-policy trainers' ``RolloutEvaluator``), model selection and
patience (``EpochTrainer``). The run directory is the one PPO and A2C write (``TrainingRun``).
"""

import logging
import math
import time
from collections.abc import Callable, Iterator
from typing import Any, NamedTuple

import numpy as np
import torch

from maze_engine.core.actor_id import ActorID
from maze_engine.core.errors import ConfigError
from maze_engine.records.minari import StepData
from maze_engine.training.acting import to_tensors
from maze_engine.training.config import BCAlgorithmConfig
from maze_engine.training.epochs import EpochTrainer, Stats, make_adam, single, step_optimizer
from maze_engine.training.evaluator import BestModelSelection, RolloutEvaluator
from maze_engine.training.reporting import TrainingReporter

__all__ = ["BCAlgorithmConfig", "BehaviouralCloning", "Samples", "dataset_samples", "split_episodes"]

logger = logging.getLogger(__name__)

VALIDATION_CHUNK = 16_384
"""Samples per forward pass of the validation (bounds its memory on large datasets)."""


class Samples(NamedTuple):
    """Observations and the actions taken on them, tensors on the training device (first axis: sample)."""

    observations: dict[str, torch.Tensor]
    actions: dict[str, torch.Tensor]

    @property
    def size(self) -> int:
        return int(next(iter(self.actions.values())).shape[0])

    def select(self, index: torch.Tensor) -> "Samples":
        """The samples at ``index`` (a mini-batch)."""
        return Samples({key: value[index] for key, value in self.observations.items()},
                       {key: value[index] for key, value in self.actions.items()})

    def chunks(self, size: int) -> Iterator["Samples"]:
        """Consecutive slices of at most ``size`` samples."""
        for start in range(0, self.size, size):
            yield Samples({key: value[start:start + size] for key, value in self.observations.items()},
                          {key: value[start:start + size] for key, value in self.actions.items()})

    @classmethod
    def of(cls, data: StepData, index: np.ndarray, device: torch.device) -> "Samples":
        """The steps of ``data`` at ``index`` as tensors on ``device`` (float64 becomes float32)."""
        for name, values in (("observation", data.observations), ("action", data.actions)):
            if not isinstance(values, dict) or not all(isinstance(value, np.ndarray)
                                                       for value in values.values()):
                raise ConfigError(f"dataset: {data.name}: behavioural cloning takes flat dicts of arrays as "
                                  f"{name}s (one array per key), got {type(values).__name__}")
        return cls(to_tensors({key: value[index] for key, value in data.observations.items()}, device),
                   to_tensors({key: value[index] for key, value in data.actions.items()}, device))


def split_episodes(lengths: np.ndarray, fraction: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Step indices of the training and the validation split: ``fraction`` of the episodes (at least one,
    never all) held out at random, or the last ``fraction`` of the steps of a single episode.

    >>> train, validation = split_episodes(np.array([3, 2, 4]), 0.3, seed=0)
    >>> len(train) + len(validation), sorted(validation.tolist()) in ([0, 1, 2], [3, 4], [5, 6, 7, 8])
    (9, True)
    """
    total = int(lengths.sum())
    if fraction <= 0:
        return np.arange(total), np.arange(0)
    if len(lengths) < 2:
        held = min(max(1, math.ceil(fraction * total)), total - 1)
        return np.arange(total - held), np.arange(total - held, total)
    held_episodes = min(max(1, round(fraction * len(lengths))), len(lengths) - 1)
    chosen = np.zeros(len(lengths), bool)
    chosen[np.random.default_rng(seed).choice(len(lengths), held_episodes, replace=False)] = True
    in_validation = np.repeat(chosen, lengths)
    return np.flatnonzero(~in_validation), np.flatnonzero(in_validation)


class BehaviouralCloning(EpochTrainer):
    """Trains ``policy`` to take the actions of ``train`` (``Samples``); ``validation`` measures it on
    held-out episodes. Without an evaluator, the validation loss (else the training loss) selects models.
    """

    config: BCAlgorithmConfig

    def __init__(self, config: BCAlgorithmConfig, policy: Any, actor_id: ActorID, train: Samples,
                 validation: Samples | None = None, evaluator: RolloutEvaluator | None = None,
                 model_selection: BestModelSelection | None = None,
                 reporter: TrainingReporter | None = None) -> None:
        if not isinstance(config, BCAlgorithmConfig):
            raise ConfigError(f"algorithm_config: expected a BCAlgorithmConfig, got {type(config).__name__}")
        config.validate()
        if train.size < 1:
            raise ConfigError("dataset: the training split holds no samples")
        super().__init__(config, policy, evaluator, model_selection, reporter)
        self.actor_id = actor_id
        self.train_samples = train
        self.validation_samples = validation if validation is not None and validation.size else None
        self.policy_parameters = list(self.policy.parameters())
        self.optimizer: torch.optim.Optimizer = make_adam(self.policy_parameters, config.lr)

    def updates_per_epoch(self) -> int:
        return math.ceil(self.train_samples.size / self.config.batch_size)

    @property
    def selected_by(self) -> str:
        if self.evaluator is not None:
            return "eval"
        return "validation_loss" if self.validation_samples is not None else "training_loss"

    # ------------------------------------------------------------------------------------------- update
    def update(self, batch: Samples) -> dict[str, float]:
        """One gradient step on the negative log-likelihood of the dataset's actions under the policy's
        distribution (its DistributionMapper): cross-entropy for discrete actions, the Gaussian likelihood
        for continuous ones, and so on for every action space the policy supports."""
        distribution = self.policy.distribution(batch.observations, self.actor_id)
        loss = -distribution.log_prob(batch.actions).mean()
        if self.config.max_grad_norm > 0:
            grad_norm = step_optimizer(self.optimizer, loss, self.policy_parameters,
                                       self.config.max_grad_norm)
            return {"policy_loss": loss.item(), "grad_norm": grad_norm}
        # Without clipping no norm is needed: measuring it would cost a tenth of a small net's update.
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return {"policy_loss": loss.item()}

    def _train_epoch(self, stop_when: Callable[["BehaviouralCloning"], bool] | None) -> bool:
        started, size, batch_size = time.perf_counter(), self.train_samples.size, self.config.batch_size
        self.policy.train()
        order = torch.randperm(size, device=self.device)
        updates = (lambda start=start: self.update(self.train_samples.select(order[start:start + batch_size]))
                   for start in range(0, size, batch_size))
        learner, stopped = self.run_updates(updates, self.updates_per_epoch(), stop_when)
        seconds = time.perf_counter() - started
        sections: dict[str, Stats] = {
            "learner": {name: aggregate.summary() for name, aggregate in learner.items()},
            "time": {"samples_per_second": single(size / seconds if seconds > 0 else math.nan),
                     "epoch_seconds": single(seconds)}}
        # Without an evaluator the loss selects models; with one it decides between equal returns.
        imitation = -sections["learner"]["policy_loss"]["mean"]
        if self.validation_samples is not None:
            sections["validation"] = self.validate(self.validation_samples)
            imitation = -sections["validation"]["policy_loss"]["mean"]
        self.publish_epoch(sections, imitation, tiebreak=imitation)
        return stopped

    @torch.no_grad()
    def validate(self, samples: Samples) -> Stats:
        """Mean negative log-likelihood and entropy on ``samples``; ``accuracy``, the share of samples whose
        most likely action is the dataset's, for integer actions (discrete spaces)."""
        was_training = self.policy.networks.training
        self.policy.eval()
        loss = entropy = matches = 0.0
        integer_keys = [key for key, value in samples.actions.items() if not value.is_floating_point()]
        for chunk in samples.chunks(VALIDATION_CHUNK):
            distribution = self.policy.distribution(chunk.observations, self.actor_id)
            loss -= float(distribution.log_prob(chunk.actions).sum())
            entropy += float(distribution.entropy().sum())
            if integer_keys:
                mode = distribution.deterministic_sample()
                equal = torch.ones(chunk.size, dtype=torch.bool, device=self.device)
                for key in integer_keys:
                    equal &= (mode[key] == chunk.actions[key]).reshape(chunk.size, -1).all(dim=1)
                matches += float(equal.sum())
        self.policy.train(was_training)
        stats = {"policy_loss": single(loss / samples.size), "entropy": single(entropy / samples.size)}
        if integer_keys:
            stats["accuracy"] = single(matches / samples.size)
        return stats

    # -------------------------------------------------------------------------------------------- state
    def state_dict(self) -> dict[str, Any]:
        """Everything training continues from: weights, optimizer, counters, model selection."""
        return {"epoch": self.epoch, "n_updates": self.n_updates, "total_env_steps": 0,
                "policy": self.policy.state_dict(), "optimizer": self.optimizer.state_dict(),
                "model_selection": (self.model_selection.state_dict() if self.model_selection is not None
                                    else None)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from ``state_dict()``."""
        self.policy.load_state_dict(state["policy"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.epoch = int(state["epoch"])
        self.n_updates = int(state["n_updates"])
        if self.model_selection is not None and state.get("model_selection") is not None:
            self.model_selection.load_state_dict(state["model_selection"])


def dataset_samples(source: str, observation_space: Any, action_space: Any, config: BCAlgorithmConfig,
                    seed: int = 0) -> tuple[Samples, Samples | None]:
    """The training and validation samples of the Minari dataset ``source`` (an id or a path), checked
    against the policy's spaces, on ``config.device``; the split is drawn with ``seed``."""
    from maze_engine.records.minari import load_steps
    from maze_engine.training.epochs import resolve_device

    data = load_steps(source, observation_space, action_space)
    train, validation = split_episodes(data.episode_lengths, config.validation_fraction, seed)
    logger.info("dataset %s: %d steps in %d episodes, %d held out for validation", data.name,
                len(train) + len(validation), len(data.episode_lengths), len(validation))
    device = resolve_device(config.device)
    return Samples.of(data, train, device), Samples.of(data, validation, device) if len(validation) else None
