"""A built training run: trains, checkpoints after epochs, draws the learning curve and sums up at the end.

``launch.build_training`` assembles a ``TrainingRun`` from a config; ``TrainingRun.train`` runs the trainer
and, around it, does what belongs to the run directory rather than to the algorithm: ``checkpoint.pt`` every
``checkpoint_every_epochs`` epochs (``training.checkpoint``), ``learning_curve.png`` (``training.plots``) and
``summary.json`` (``training.summary``), whether training completes, stops early, is interrupted or fails.
"""

import logging
import math
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from maze_engine.core.env.structured_env import StructuredEnv
from maze_engine.training.checkpoint import (
    CHECKPOINT_FILE,
    Checkpoint,
    capture_rng_states,
    write_checkpoint,
)
from maze_engine.training.epochs import EpochTrainer, Stats
from maze_engine.training.evaluator import BestModelSelection
from maze_engine.training.plots import LearningCurvePlotter
from maze_engine.training.reporting import TrainingReporter
from maze_engine.training.summary import (
    COMPLETED,
    FAILED,
    INTERRUPTED,
    PATIENCE,
    TrainingSummary,
    explain_stop,
    write_summary,
)

logger = logging.getLogger(__name__)


class BestModelSaver:
    """Writes the run directory's model files (``save_torch_policy``) and keeps a copy of the weights it
    wrote, which checkpoints carry so a resumed run can restore exactly the best model. ``critic`` is None
    for trainers without one (behavioural cloning)."""

    def __init__(self, run_dir: Path, policy: Any, critic: Any, model_config: Any, observation_spaces: Any,
                 action_spaces: Any, agent_counts: Any) -> None:
        self.run_dir = run_dir
        self.policy = policy
        self.critic = critic
        self.model_config = model_config
        self.spaces = (observation_spaces, action_spaces)
        self.agent_counts = agent_counts
        self.weights: dict[str, Any] | None = None
        """``{"policy": state dict, "critic": state dict}`` as last written (None before)."""

    def __call__(self) -> None:
        from maze_engine.policies.torch_io import save_torch_policy

        save_torch_policy(self.run_dir, self.policy, self.model_config, self.spaces[0], self.spaces[1],
                          critic=self.critic, agent_counts_dict=self.agent_counts)
        self.weights = self._copies()

    def restore(self, weights: Mapping[str, Any]) -> None:
        """Write ``weights`` (a checkpoint's best model) as the run's model files; the nets keep theirs."""
        current = self._copies()
        self._load(weights)
        try:
            self()
        finally:
            self._load(current)

    def _copies(self) -> dict[str, Any]:
        weights = {"policy": _cpu_copy(self.policy.state_dict())}
        if self.critic is not None:
            weights["critic"] = _cpu_copy(self.critic.state_dict())
        return weights

    def _load(self, weights: Mapping[str, Any]) -> None:
        self.policy.load_state_dict(weights["policy"])
        if self.critic is not None:
            self.critic.load_state_dict(weights["critic"])


class TrainingRun:
    """Everything a training run is made of; ``train`` runs it, ``close`` releases envs and files.

    ``config`` is the run's ``checkpoint.comparable_config``, stored in every checkpoint; ``normalization``
    the observation normalization statistics of its envs; ``resumed`` the checkpoint this run continues
    (``train`` then trains up to the configured number of epochs, not that many more).
    """

    def __init__(self, trainer: EpochTrainer, policy: Any, critic: Any, env_factory: Any, run_dir: Path,
                 model_selection: BestModelSelection, save_model: BestModelSaver, reporter: TrainingReporter,
                 eval_envs: list[StructuredEnv], config: dict[str, Any],
                 normalization: dict[str, Any] | None = None, checkpoint_every_epochs: int = 1,
                 resumed: Checkpoint | None = None, title: str = "") -> None:
        self.trainer = trainer
        self.policy = policy
        self.critic = critic
        self.env_factory = env_factory
        self.run_dir = run_dir
        self.model_selection = model_selection
        self.save_model = save_model
        self.reporter = reporter
        self.eval_envs = eval_envs
        self.config = config
        self.normalization = normalization
        self.checkpoint_every_epochs = checkpoint_every_epochs
        self.resumed = resumed
        self.title = title
        self.plotter = LearningCurvePlotter(run_dir)
        self.summary: TrainingSummary | None = None
        """What the last ``train`` call ended with (also written to ``summary.json``)."""
        self.closed = False
        self._seconds_before = resumed.seconds if resumed is not None else 0.0
        self._session_start = 0.0
        self._resume_pending = resumed is not None

    # ------------------------------------------------------------------------------------------ training
    def train(self, n_epochs: int | None = None,
              after_epoch: Callable[[EpochTrainer], None] | None = None,
              **kwargs: Any) -> dict[str, Stats]:
        """Train (``n_epochs`` overrides the config's), make sure a model is saved, checkpoint, plot and sum
        up; return the last epoch's statistics. Other keyword arguments (``stop_when``) go to the trainer."""
        self._session_start = time.perf_counter()
        finished = None
        if self._resume_pending and n_epochs is None:
            n_epochs, finished = self._epochs_left()
        self._resume_pending = False

        def each_epoch(trainer: EpochTrainer) -> None:
            self._after_epoch()
            if after_epoch is not None:
                after_epoch(trainer)

        try:
            if finished is None:
                self.trainer.train(n_epochs=n_epochs, after_epoch=each_epoch, **kwargs)
        except (KeyboardInterrupt, SystemExit):
            self._finish(INTERRUPTED)
            raise
        except Exception as err:
            self._finish(FAILED, f"{type(err).__name__}: {err}")
            raise
        if self.model_selection.best_score == -math.inf:
            self.save_model()  # no evaluation ever scored: keep the final weights
        if finished is not None:
            self._finish(finished, "it had finished before this resume")
        else:
            self._finish(self.trainer.stop_reason or COMPLETED)
        return self.trainer.last_stats

    def _epochs_left(self) -> tuple[int | None, str | None]:
        """Epochs a resumed run still has to train, or the reason it had already finished."""
        configured = self.trainer.config.n_epochs
        if configured and self.trainer.epoch >= configured:
            return None, COMPLETED
        if self.trainer.out_of_patience():
            return None, PATIENCE
        return (configured - self.trainer.epoch if configured else 0), None

    def _after_epoch(self) -> None:
        every = self.checkpoint_every_epochs
        if every > 0 and self.trainer.epoch % every == 0:
            self.write_checkpoint()
        try:
            self.plotter.epoch_done(self.model_selection.best_epoch, self.title)
        except Exception as err:  # noqa: BLE001 - a failed drawing must not stop the training
            logger.warning("learning curve not drawn: %s", err)

    def write_checkpoint(self, stop_reason: str | None = None) -> Path:
        """Write ``checkpoint.pt`` with the state at the end of the last epoch."""
        checkpoint = Checkpoint(trainer=self.trainer.state_dict(), best_weights=self.save_model.weights,
                                normalization=self.normalization, rng=capture_rng_states(),
                                config=self.config, seconds=self._seconds(), stop_reason=stop_reason)
        path = write_checkpoint(self.run_dir, checkpoint)
        logger.debug("checkpoint of epoch %d written to %s", self.trainer.epoch - 1, path)
        return path

    def _seconds(self) -> float:
        return self._seconds_before + (time.perf_counter() - self._session_start)

    def _finish(self, reason: str, detail: str = "") -> None:
        """Final checkpoint (when the state is an epoch's end), learning curve and summary."""
        if reason not in (INTERRUPTED, FAILED):
            self.write_checkpoint(stop_reason=reason)
        curve = None
        try:
            curve = self.plotter.finish(self.model_selection.best_epoch, self.title)
        except Exception as err:  # noqa: BLE001 - the summary matters more than the picture
            logger.warning("learning curve not drawn: %s", err)
        self.summary = self._summary(reason, detail, curve)
        self._seconds_before = self.summary.seconds
        try:
            write_summary(self.run_dir, self.summary)
        except OSError as err:
            logger.warning("summary.json not written: %s", err)
        logger.info("%s", self.summary.format())

    def _summary(self, reason: str, detail: str, curve: Path | None) -> TrainingSummary:
        trainer, selection = self.trainer, self.model_selection
        selected_by = trainer.selected_by
        scored = selection.best_score != -math.inf
        by_loss = selected_by.endswith("_loss")  # the score is a negative loss (behavioural cloning)
        run_dir = self.run_dir.resolve()
        checkpoint, weights = run_dir / CHECKPOINT_FILE, run_dir / "state_dict.pt"
        return TrainingSummary(
            run_dir=str(run_dir), epochs=trainer.epoch, n_epochs=trainer.config.n_epochs,
            stop_reason=reason,
            stopped_because=explain_stop(reason, trainer.epoch, trainer.config.n_epochs,
                                         trainer.config.patience, selected_by, detail),
            best_return=float(selection.best_score) if scored and not by_loss else None,
            best_loss=-float(selection.best_score) if scored and by_loss else None,
            best_epoch=selection.best_epoch if scored else None, selected_by=selected_by,
            weights=str(weights) if weights.is_file() else None,
            checkpoint=str(checkpoint) if checkpoint.is_file() else None,
            learning_curve=str(curve.resolve()) if curve is not None else None,
            total_env_steps=trainer.total_env_steps, seconds=round(self._seconds(), 3),
            resumed_at_epoch=self.resumed.epoch if self.resumed is not None else None,
            last_stats={section: dict(stats) for section, stats in trainer.last_stats.items()})

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.trainer.close()
        for env in self.eval_envs:
            env.close()
        self.reporter.close()


def _cpu_copy(state_dict: Mapping[str, Any]) -> dict[str, Any]:
    return {key: value.detach().cpu().clone() if hasattr(value, "detach") else value
            for key, value in state_dict.items()}
