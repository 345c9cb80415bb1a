"""What a training run did, in a few lines: printed when ``maze-run -cn conf_train`` ends, written to
``summary.json`` in the run directory, returned by ``train_from_config``.

Epochs are numbered from 0, as in ``stats.tsv``, TensorBoard and the console tables; ``epochs`` counts them.
"""

import json
import math
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

SUMMARY_FILE = "summary.json"

COMPLETED = "completed"
PATIENCE = "patience"
STOP_WHEN = "stop_when"
INTERRUPTED = "interrupted"
FAILED = "failed"
STOP_REASONS = (COMPLETED, PATIENCE, STOP_WHEN, INTERRUPTED, FAILED)
"""Values of ``TrainingSummary.stop_reason``."""


@dataclass(frozen=True)
class TrainingSummary:
    """The outcome of a training run (all sessions of it, when it was resumed)."""

    run_dir: str
    """The run directory (absolute)."""
    epochs: int
    """Epochs trained in all."""
    n_epochs: int
    """Epochs configured (``algorithm.n_epochs``; 0: until patience stops the run)."""
    stop_reason: str
    """One of STOP_REASONS: ``completed``, ``patience``, ``stop_when``, ``interrupted``, ``failed``."""
    stopped_because: str
    """The stop reason as a sentence."""
    best_return: float | None
    """The best mean return, by which the saved weights were selected (None: never scored, or selected by a
    loss)."""
    best_epoch: int | None
    """The epoch that scored ``best_return`` (or ``best_loss``)."""
    selected_by: str
    """``eval`` (evaluation episodes after each epoch) or ``train`` (training episodes, eval_repeats=0);
    behavioural cloning without evaluation: ``validation_loss`` or ``training_loss``."""
    weights: str | None
    """``state_dict.pt``: the best weights (the last ones when nothing ever scored)."""
    checkpoint: str | None
    """``checkpoint.pt``, to continue with ``resume=<run_dir>``."""
    learning_curve: str | None
    """``learning_curve.png``."""
    total_env_steps: int
    """Env steps of the training envs, all sessions."""
    seconds: float
    """Training wall time, all sessions."""
    resumed_at_epoch: int | None = None
    """The epoch this session continued from (None: it started the run)."""
    last_stats: dict[str, Any] = field(default_factory=dict)
    """The last epoch's statistics by section (``train``, ``eval``, ``learner``, ``time``)."""
    best_loss: float | None = None
    """The lowest loss, when a loss selected the saved weights (``selected_by`` ends in ``_loss``)."""

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able values (non-finite numbers become None)."""
        return _finite(asdict(self))

    def format(self) -> str:
        """The summary as the lines ``maze-run`` prints."""
        run = self.run_dir
        lines = [f"training {_headline(self.stop_reason)} after {self.epochs} epoch"
                 f"{'' if self.epochs == 1 else 's'}: {self.stopped_because}",
                 f"  run directory   {run}"]
        where = f" in epoch {self.best_epoch}" if self.best_epoch is not None else ""
        if self.best_return is not None:
            kind = "evaluation" if self.selected_by == "eval" else "training"
            lines.append(f"  best return     {self.best_return:.4g} (mean {kind} episode return){where}")
        elif self.best_loss is not None:
            kind = self.selected_by.removesuffix("_loss")
            lines.append(f"  best loss       {self.best_loss:.4g} ({kind} loss){where}")
        else:
            lines.append("  best return     none (no episode finished); the weights are the last ones")
        if self.weights is not None:
            lines.append(f"  weights         {self.weights}")
        if self.checkpoint is not None:
            lines.append(f"  checkpoint      {self.checkpoint}")
        if self.learning_curve is not None:
            lines.append(f"  learning curve  {self.learning_curve}")
        if self.total_env_steps:
            lines.append(f"  env steps       {self.total_env_steps:,} in {self.seconds:.1f} s")
        else:  # behavioural cloning learns from a dataset, not from env steps
            lines.append(f"  training time   {self.seconds:.1f} s")
        lines.append(f"  summary         {Path(run) / SUMMARY_FILE}")
        if self.weights is not None:
            lines.append(f"  roll it out     maze-run policy=torch_policy input_dir={run}")
        if self.checkpoint is not None and self.stop_reason in (INTERRUPTED, FAILED, STOP_WHEN):
            lines.append(f"  continue        maze-run -cn conf_train <the same overrides> resume={run}")
        return "\n".join(lines)


def explain_stop(reason: str, epochs: int, n_epochs: int, patience: int, selected_by: str = "eval",
                 detail: str = "") -> str:
    """``reason`` as a sentence, e.g. ``stopped early: no new best evaluation return for 15 epochs``;
    ``detail`` (an error, a note) is added to it."""
    if reason == COMPLETED:
        sentence = (f"trained the {epochs} configured epochs" if epochs == n_epochs
                    else f"trained the epochs asked for ({epochs} in all)")
    elif reason == PATIENCE:
        best = (f"{selected_by.removesuffix('_loss')} loss" if selected_by.endswith("_loss") else
                f"{'evaluation' if selected_by == 'eval' else 'training'} return")
        planned = f" of {n_epochs}" if n_epochs else ""
        sentence = (f"stopped early after epoch {epochs - 1}{planned}: no new best {best} for "
                    f"{patience} epochs (algorithm.patience={patience}; 0 never stops early)")
    elif reason == STOP_WHEN:
        sentence = "stopped by the caller's stop_when condition"
    elif reason == INTERRUPTED:
        sentence = f"interrupted during epoch {epochs}; resume=<run dir> continues from the last checkpoint"
    else:
        sentence = f"failed during epoch {epochs}"
    return f"{sentence}: {detail}" if reason == FAILED and detail else \
        f"{sentence} ({detail})" if detail else sentence


def write_summary(run_dir: str | Path, summary: TrainingSummary) -> Path:
    """Write ``summary.json`` atomically; returns its path."""
    path = Path(run_dir) / SUMMARY_FILE
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temporary.write_text(json.dumps(summary.to_dict(), indent=2, allow_nan=False) + "\n", encoding="utf-8")
    os.replace(temporary, path)
    return path


def read_summary(run_dir: str | Path) -> TrainingSummary:
    """Read ``summary.json`` back."""
    values = json.loads((Path(run_dir) / SUMMARY_FILE).read_text(encoding="utf-8"))
    return TrainingSummary(**values)


def _headline(reason: str) -> str:
    return {COMPLETED: "finished", PATIENCE: "finished", STOP_WHEN: "stopped", INTERRUPTED: "interrupted",
            FAILED: "failed"}.get(reason, "ended")


def _finite(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {str(key): _finite(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(item) for item in value]
    return value
