"""The epoch loop every trainer shares, and the pieces of an update they have in common.

``EpochTrainer.train`` runs epochs until the configured number is reached, ``patience`` epochs pass without a
new best score, or a caller's ``stop_when`` says so. A trainer implements one epoch (``_train_epoch``) and
ends it with ``publish_epoch``: evaluation and model selection, then the epoch's statistics. The on-policy
trainers (``OnPolicyTrainer``: A2C, PPO) and behavioural cloning (``BehaviouralCloning``) are such trainers.
"""

import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable
from typing import Any

import torch

from maze_engine.core.errors import ConfigError
from maze_engine.core.stats.running import RunningStats
from maze_engine.training.evaluator import BestModelSelection, RolloutEvaluator
from maze_engine.training.reporting import TrainingReporter
from maze_engine.training.summary import COMPLETED, PATIENCE, STOP_WHEN

Stats = dict[str, dict[str, float]]


def resolve_device(device: str) -> torch.device:
    """``algorithm.device`` as a torch device; ConfigError when CUDA is asked for but not there."""
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"algorithm.device: {device!r} requested but CUDA is not available to torch "
                          f"{torch.__version__}; use 'cpu'")
    try:
        return torch.device(device)
    except RuntimeError as err:
        raise ConfigError(f"algorithm.device: expected 'cpu', 'cuda' or 'cuda:N', got {device!r}") from err


def make_adam(parameters: list[torch.Tensor], lr: float) -> torch.optim.Adam:
    """Adam, fused into one kernel per step where torch supports it (much of a small net's update time)."""
    try:
        return torch.optim.Adam(parameters, lr=lr, fused=True)
    except (RuntimeError, ValueError):
        return torch.optim.Adam(parameters, lr=lr, foreach=True)


def step_optimizer(optimizer: torch.optim.Optimizer, loss: torch.Tensor, parameters: Iterable[torch.Tensor],
                   max_grad_norm: float, frozen: Iterable[torch.Tensor] = ()) -> float:
    """Backpropagate ``loss``, clip the gradient norm of ``parameters`` (0: no clipping), step; return the
    norm before clipping. ``frozen`` parameters lose their gradient before the step, and Adam skips
    parameters without one."""
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    for parameter in frozen:
        parameter.grad = None
    with_grad = [parameter for parameter in parameters if parameter.grad is not None]
    if max_grad_norm > 0:
        grad_norm = torch.nn.utils.clip_grad_norm_(with_grad, max_grad_norm)
    else:
        grad_norm = torch.nn.utils.get_total_norm([parameter.grad for parameter in with_grad
                                                   if parameter.grad is not None])
    optimizer.step()
    return float(grad_norm)


def single(value: float) -> dict[str, float]:
    """A statistic of one value, in the shape every metric has."""
    return {"mean": value, "std": 0.0, "min": value, "max": value, "count": 1}


class EpochTrainer(ABC):
    """Trains ``policy`` epoch by epoch; subclasses implement ``_train_epoch``, ``updates_per_epoch`` and
    their state.

    ``config`` has at least ``n_epochs``, ``patience``, ``lr``, ``lr_schedule`` and ``device``.
    ``evaluator`` runs after every epoch and its mean return drives ``model_selection`` (which saves the best
    policy) and ``patience``; without one, the score each trainer gives ``publish_epoch`` does.
    """

    def __init__(self, config: Any, policy: Any, evaluator: RolloutEvaluator | None = None,
                 model_selection: BestModelSelection | None = None,
                 reporter: TrainingReporter | None = None) -> None:
        self.config = config
        self.device = resolve_device(config.device)
        self.policy = policy.to(self.device) or policy
        self.evaluator = evaluator
        if evaluator is not None and evaluator.model_selection is None:
            evaluator.model_selection = model_selection
        self.model_selection = evaluator.model_selection if evaluator is not None else model_selection
        self.reporter = reporter or TrainingReporter(silent=True)
        self.optimizer: torch.optim.Optimizer | None = None
        """Set by the subclass; ``apply_learning_rate`` sets its learning rate."""
        self.epoch = 0
        self.n_updates = 0
        self.total_env_steps = 0
        self.last_stats: dict[str, Stats] = {}
        self.stop_reason: str | None = None
        """Why the last ``train`` ended: ``completed``, ``patience`` or ``stop_when`` (training.summary)."""
        self._planned_updates = 0

    @property
    def selected_by(self) -> str:
        """What scores models: ``eval`` (the evaluation's mean return) or, without an evaluator, ``train``
        (the training episodes' mean return); behavioural cloning may say ``validation_loss`` or
        ``training_loss`` (the score is then the negative loss)."""
        return "eval" if self.evaluator is not None else "train"

    @property
    def burn_in_epochs(self) -> int:
        """Epochs at the start that patience does not count (the on-policy critic burn-in)."""
        return 0

    def train(self, n_epochs: int | None = None,
              stop_when: Callable[[Any], bool] | None = None,
              after_epoch: Callable[[Any], None] | None = None) -> dict[str, Stats]:
        """Train for ``n_epochs`` more epochs (default: the config's; 0 = until patience stops it) and return
        the last epoch's statistics by section (``train``, ``eval``, ``learner``, ``time``...).

        ``stop_when(trainer)`` is asked after every update and ends training when it returns True;
        ``after_epoch(trainer)`` runs after each epoch's statistics are published (checkpoints, plots).
        ``stop_reason`` says afterwards why training ended.
        """
        n_epochs = self.config.n_epochs if n_epochs is None else n_epochs
        if not isinstance(n_epochs, int) or n_epochs < 0:
            raise ConfigError(f"n_epochs: expected an integer >= 0, got {n_epochs!r}")
        # A linear schedule runs over the configured epochs of the whole run (earlier calls and sessions
        # included), or over more when this call asks for more.
        planned_epochs = max(self.config.n_epochs, self.epoch + n_epochs)
        self._planned_updates = planned_epochs * self.updates_per_epoch()
        self.before_training()
        last_epoch = self.epoch + n_epochs if n_epochs else math.inf
        self.stop_reason = None
        while self.epoch < last_epoch:
            stopped = self._train_epoch(stop_when)
            self.epoch += 1
            if after_epoch is not None:
                after_epoch(self)
            if stopped:
                self.stop_reason = STOP_WHEN
                break
            if self.epoch < last_epoch and self.out_of_patience():
                self.stop_reason = PATIENCE
                break
        else:
            self.stop_reason = COMPLETED
        return self.last_stats

    def before_training(self) -> None:
        """Called at the start of every ``train`` call (the on-policy trainers reset their envs here)."""

    @abstractmethod
    def updates_per_epoch(self) -> int:
        """Optimizer steps in one epoch (the linear learning rate schedule counts them)."""

    @abstractmethod
    def _train_epoch(self, stop_when: Callable[[Any], bool] | None) -> bool:
        """Train one epoch, ending with ``publish_epoch``; True when ``stop_when`` stopped it early."""

    @abstractmethod
    def state_dict(self) -> dict[str, Any]:
        """Everything training continues from (checkpoints)."""

    @abstractmethod
    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from ``state_dict()``."""

    def publish_epoch(self, sections: dict[str, Stats], score: float, tiebreak: float | None = None) -> None:
        """Evaluate (the evaluation's mean return selects the model, ``tiebreak`` between equal returns), or
        select by ``score`` without an evaluator; then publish the epoch's statistics."""
        if self.evaluator is not None:
            sections["eval"] = self.evaluator.evaluate(self.policy, self.epoch, tiebreak)
        elif self.model_selection is not None:
            self.model_selection.update(score, self.epoch)
        self.reporter.write_epoch(self.epoch, sections)
        self.last_stats = sections

    def out_of_patience(self) -> bool:
        """Whether ``patience`` epochs have passed without a new best score (never during burn-in)."""
        selection, patience = self.model_selection, self.config.patience
        if selection is None or patience == 0 or self.epoch <= self.burn_in_epochs:
            return False
        return selection.epochs_without_improvement >= patience

    def run_updates(self, updates: Iterable[Callable[[], dict[str, Any]]], count: int,
                    stop_when: Callable[[Any], bool] | None) -> tuple[dict[str, RunningStats], bool]:
        """Apply ``updates`` (``count`` of them; each steps the optimizer and returns its metrics) at the
        scheduled learning rate, with a progress bar; returns the metrics' aggregates and whether
        ``stop_when(self)``, asked after every update, stopped it early."""
        learner: dict[str, RunningStats] = {}
        stopped = False
        progress = self.reporter.progress(count, self.epoch)
        try:
            for update in updates:
                learning_rate = self.apply_learning_rate()
                metrics = update()
                metrics["learning_rate"] = learning_rate
                for name, value in metrics.items():
                    learner.setdefault(name, RunningStats()).add(float(value))
                self.n_updates += 1
                progress.update(1)
                if stop_when is not None and stop_when(self):
                    stopped = True
                    break
        finally:
            progress.close()
        return learner, stopped

    def apply_learning_rate(self) -> float:
        """Set the optimizer's learning rate for the next update (``lr_schedule``) and return it."""
        learning_rate = self.config.lr
        if self.config.lr_schedule == "linear" and self._planned_updates:
            learning_rate *= max(1.0 - self.n_updates / self._planned_updates, 0.0)
        assert self.optimizer is not None, "the trainer creates its optimizer before training"
        for group in self.optimizer.param_groups:
            group["lr"] = learning_rate
        return learning_rate

    def close(self) -> None:
        """Release what the trainer holds (the on-policy trainers' envs)."""
