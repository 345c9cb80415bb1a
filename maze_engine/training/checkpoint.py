"""Training checkpoints: what a run continues from (``maze-run -cn conf_train resume=<run dir>``).

A checkpoint is ``checkpoint.pt`` in the run directory, rewritten after every ``checkpoint_every_epochs``
epochs and when training ends. It holds the trainer's state (policy and critic weights, optimizer, epoch and
step counters, model selection), the weights of the best model so far, the observation normalization
statistics, the random number generator states of Python, NumPy and torch, the config that trained the run
and the training time so far. It holds tensors and plain values only and is read with
``torch.load(..., weights_only=True)``, so reading one never runs code. Envs are not saved: a resumed run
starts fresh episodes.

Writing goes to a temporary file that is then renamed over the old checkpoint, so a run killed at any moment
leaves the previous checkpoint or the new one, never half of one.
"""

import os
import random
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from maze_engine.core.errors import ConfigError

CHECKPOINT_FILE = "checkpoint.pt"
CHECKPOINT_FORMAT = "maze_engine.training_checkpoint"
CHECKPOINT_VERSION = 1

RESUMABLE_KEYS = frozenset({
    "resume", "silent", "torch_threads", "checkpoint_every_epochs", "input_dir", "algorithm.n_epochs",
    "algorithm.patience", "algorithm.device", "runner.type", "runner.n_processes", "runner.start_method",
    "runner.n_eval_envs", "runner.normalization_samples"})
"""Config keys a resumed run may change: how long it trains, where envs run, output. Everything else (env,
wrappers, model, hyperparameters, seeds, number of training envs) must match the checkpoint."""


class CheckpointError(ConfigError):
    """A checkpoint is missing, unreadable or was written by a run with a different config."""


@dataclass
class Checkpoint:
    """The content of ``checkpoint.pt``."""

    trainer: dict[str, Any]
    """``OnPolicyTrainer.state_dict()``: weights, optimizer, counters, model selection."""
    best_weights: dict[str, Any] | None
    """``{"policy": state dict, "critic": state dict}`` of the best model so far (None: none saved yet)."""
    normalization: dict[str, Any] | None
    """Observation normalization statistics ``{key: {name: array}}``, when the env normalizes."""
    rng: dict[str, Any]
    """``capture_rng_states()``."""
    config: dict[str, Any]
    """``comparable_config()`` of the run, to refuse resuming with a different one."""
    seconds: float
    """Training time so far (all sessions)."""
    stop_reason: str | None = None
    """Why training ended (``completed``, ``patience``...); None while it runs."""

    @property
    def epoch(self) -> int:
        """Epochs trained before this checkpoint was written."""
        return int(self.trainer["epoch"])


def capture_rng_states() -> dict[str, Any]:
    """The states of Python's ``random``, NumPy's global generator and torch's generators."""
    numpy_state = np.random.get_state(legacy=False)
    assert isinstance(numpy_state, dict)
    states: dict[str, Any] = {"python": random.getstate(), "numpy": _storable(numpy_state),
                              "torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        states["torch_cuda"] = torch.cuda.get_rng_state_all()
    return states


def restore_rng_states(states: Mapping[str, Any]) -> None:
    """Set the generators back to ``capture_rng_states()``'s states."""
    version, internal, gauss = states["python"]
    random.setstate((version, tuple(internal), gauss))
    np.random.set_state(_restored(states["numpy"]))
    torch.set_rng_state(states["torch"])
    if "torch_cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["torch_cuda"])


def comparable_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """``config`` (plain values) as dotted keys, without the keys a resumed run may change."""
    flat: dict[str, Any] = {}

    def visit(node: Any, prefix: str) -> None:
        if isinstance(node, Mapping) and node:
            for key, value in node.items():
                visit(value, f"{prefix}.{key}" if prefix else str(key))
        elif isinstance(node, list | tuple) and node:
            for index, value in enumerate(node):
                visit(value, f"{prefix}.{index}")
        elif prefix not in RESUMABLE_KEYS:
            flat[prefix] = [] if isinstance(node, list | tuple) else node

    visit(config, "")
    return flat


def write_checkpoint(run_dir: str | Path, checkpoint: Checkpoint) -> Path:
    """Write ``checkpoint.pt`` atomically (temporary file, then rename); returns its path."""
    path = Path(run_dir) / CHECKPOINT_FILE
    document = {"format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION,
                "trainer": _storable(checkpoint.trainer), "best_weights": checkpoint.best_weights,
                "normalization": _storable(checkpoint.normalization), "rng": checkpoint.rng,
                "config": _storable(checkpoint.config), "seconds": float(checkpoint.seconds),
                "stop_reason": checkpoint.stop_reason}
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        torch.save(document, temporary)
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
    return path


def read_checkpoint(run_dir: str | Path) -> Checkpoint:
    """Read the checkpoint of the run in ``run_dir``; CheckpointError naming the file if it cannot."""
    directory = Path(run_dir)
    path = directory / CHECKPOINT_FILE
    if not directory.is_dir():
        raise CheckpointError(f"resume: {directory} is not a directory; expected the run directory of an "
                              "earlier training (outputs/<date>/<time>)")
    if not path.is_file():
        raise CheckpointError(f"resume: {path} not found; expected a training run directory with a "
                              f"{CHECKPOINT_FILE} (written every checkpoint_every_epochs epochs)")
    try:
        document = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - torch raises many kinds for a truncated or foreign file
        raise CheckpointError(f"resume: {path} is not a readable checkpoint ({type(err).__name__}: "
                              f"{str(err).splitlines()[0] if str(err) else 'no details'}); it may be "
                              "truncated or not written by maze_engine") from err
    if not isinstance(document, dict) or document.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"resume: {path} is not a maze_engine training checkpoint")
    if document.get("version") != CHECKPOINT_VERSION:
        raise CheckpointError(f"resume: {path} has checkpoint version {document.get('version')!r}; this "
                              f"maze_engine reads version {CHECKPOINT_VERSION}")
    try:
        return Checkpoint(trainer=_restored(document["trainer"]), best_weights=document["best_weights"],
                          normalization=_restored(document["normalization"]), rng=document["rng"],
                          config=_restored(document["config"]), seconds=float(document["seconds"]),
                          stop_reason=document["stop_reason"])
    except (KeyError, TypeError, ValueError) as err:
        raise CheckpointError(f"resume: {path} lacks part of a checkpoint ({err})") from err


def check_same_config(checkpoint: Checkpoint, config: Mapping[str, Any], run_dir: str | Path) -> None:
    """CheckpointError listing the keys where ``config`` differs from the config that wrote ``checkpoint``."""
    now = comparable_config(config)
    then = checkpoint.config
    differing = sorted(key for key in set(now) | set(then) if now.get(key, _ABSENT) != then.get(key, _ABSENT))
    if not differing:
        return
    shown = "; ".join(f"{key}: {_shown(then.get(key, _ABSENT))} in the checkpoint, "
                      f"{_shown(now.get(key, _ABSENT))} now" for key in differing[:3])
    more = f" (and {len(differing) - 3} more)" if len(differing) > 3 else ""
    raise CheckpointError(f"resume: {Path(run_dir) / CHECKPOINT_FILE} was written with a different config: "
                          f"{shown}{more}; resume with the run's own overrides (see "
                          f"{Path(run_dir) / '.hydra' / 'overrides.yaml'}) or start a new run")


class _Absent:
    def __repr__(self) -> str:
        return "absent"


_ABSENT = _Absent()


def _shown(value: Any) -> str:
    return "absent" if value is _ABSENT else repr(value)


def _storable(value: Any) -> Any:
    """NumPy arrays as tensors (what ``weights_only`` loading accepts), recursively."""
    if isinstance(value, np.ndarray):
        return {"__ndarray__": torch.from_numpy(np.ascontiguousarray(value).astype(_widened(value.dtype))),
                "dtype": value.dtype.str}
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Mapping):
        return {key: _storable(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_storable(item) for item in value]
    if isinstance(value, tuple):
        return tuple(_storable(item) for item in value)
    return value


def _restored(value: Any) -> Any:
    """The inverse of ``_storable``."""
    if isinstance(value, Mapping):
        if "__ndarray__" in value:
            return value["__ndarray__"].numpy().astype(np.dtype(value["dtype"]))
        return {key: _restored(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_restored(item) for item in value]
    if isinstance(value, tuple):
        return tuple(_restored(item) for item in value)
    return value


def _widened(dtype: np.dtype) -> np.dtype:
    """A dtype torch holds for sure: unsigned integers go to int64 (and come back on restore)."""
    return np.dtype(np.int64) if dtype.kind == "u" else dtype
