"""training.checkpoint: atomic writes, weights-only reads, RNG states, and errors that name the file."""

import random
from pathlib import Path

import numpy as np
import pytest
import torch

from maze_engine.training.checkpoint import (
    CHECKPOINT_FILE,
    Checkpoint,
    CheckpointError,
    capture_rng_states,
    check_same_config,
    comparable_config,
    read_checkpoint,
    restore_rng_states,
    write_checkpoint,
)

CONFIG = {"env": {"name": "CartPole-v1"}, "algorithm": {"lr": 0.002, "n_epochs": 20},
          "model": {"hidden_units": [64, 64]}, "silent": False, "resume": None}


def _checkpoint(**changes: object) -> Checkpoint:
    values: dict[str, object] = dict(
        trainer={"epoch": 3, "n_updates": 6, "weights": torch.arange(4.0), "recent_returns": [1.0, 2.5]},
        best_weights={"policy": {"w": torch.ones(2)}, "critic": {"w": torch.zeros(2)}},
        normalization={"observation": {"mean": np.arange(3, dtype=np.float32), "std": np.ones(3)}},
        rng=capture_rng_states(), config=comparable_config(CONFIG), seconds=12.5)
    values.update(changes)
    return Checkpoint(**values)  # type: ignore[arg-type]


def test_round_trip_keeps_tensors_arrays_and_values(tmp_path: Path) -> None:
    path = write_checkpoint(tmp_path, _checkpoint(stop_reason="completed"))
    assert path == tmp_path / CHECKPOINT_FILE
    assert [item.name for item in tmp_path.iterdir()] == [CHECKPOINT_FILE]  # no temporary file left
    loaded = read_checkpoint(tmp_path)
    assert loaded.epoch == 3 and loaded.seconds == 12.5 and loaded.stop_reason == "completed"
    assert torch.equal(loaded.trainer["weights"], torch.arange(4.0))
    assert loaded.trainer["recent_returns"] == [1.0, 2.5]
    mean = loaded.normalization["observation"]["mean"]  # type: ignore[index]
    assert isinstance(mean, np.ndarray) and mean.dtype == np.float32 and mean.tolist() == [0, 1, 2]
    assert loaded.config == comparable_config(CONFIG)


def test_rng_states_come_back() -> None:
    states = capture_rng_states()
    expected = (random.random(), np.random.random(), torch.rand(1).item())
    restore_rng_states(states)
    assert (random.random(), np.random.random(), torch.rand(1).item()) == expected


def test_rng_states_survive_the_file(tmp_path: Path) -> None:
    write_checkpoint(tmp_path, _checkpoint())
    expected = (random.random(), np.random.random(), torch.rand(1).item())
    restore_rng_states(read_checkpoint(tmp_path).rng)
    # The checkpoint was captured before the draws above, so the same draws come again.
    assert (random.random(), np.random.random(), torch.rand(1).item()) == expected


def test_an_overwritten_checkpoint_is_replaced_whole(tmp_path: Path) -> None:
    write_checkpoint(tmp_path, _checkpoint())
    write_checkpoint(tmp_path, _checkpoint(trainer={"epoch": 4}))
    assert read_checkpoint(tmp_path).epoch == 4


@pytest.mark.parametrize(("content", "message"), [
    (None, "checkpoint.pt not found"),
    (b"not a checkpoint at all", "is not a readable checkpoint"),
    ("truncated", "is not a readable checkpoint"),
    ("foreign", "is not a maze_engine training checkpoint"),
])
def test_unreadable_checkpoints_name_the_file(tmp_path: Path, content: object, message: str) -> None:
    path = tmp_path / CHECKPOINT_FILE
    if content == "truncated":
        write_checkpoint(tmp_path, _checkpoint())
        path.write_bytes(path.read_bytes()[:200])
    elif content == "foreign":
        torch.save({"weights": torch.ones(1)}, path)
    elif isinstance(content, bytes):
        path.write_bytes(content)
    with pytest.raises(CheckpointError, match=message) as caught:
        read_checkpoint(tmp_path)
    assert str(path) in str(caught.value) and str(caught.value).startswith("resume: ")


def test_pickled_objects_are_refused(tmp_path: Path) -> None:
    # weights_only loading never runs code from a file: an arbitrary object is not a checkpoint.
    document = {"format": "maze_engine.training_checkpoint", "payload": Path("/")}
    torch.save(document, tmp_path / CHECKPOINT_FILE)
    with pytest.raises(CheckpointError, match="not a readable checkpoint"):
        read_checkpoint(tmp_path)


def test_missing_run_directory_is_named(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="is not a directory"):
        read_checkpoint(tmp_path / "nowhere")


def test_a_different_config_is_refused_naming_the_keys(tmp_path: Path) -> None:
    checkpoint = _checkpoint()
    changed = {**CONFIG, "algorithm": {"lr": 0.1, "n_epochs": 20}, "env": {"name": "Acrobot-v1"}}
    with pytest.raises(CheckpointError) as caught:
        check_same_config(checkpoint, changed, tmp_path)
    message = str(caught.value)
    assert str(tmp_path / CHECKPOINT_FILE) in message
    assert "algorithm.lr: 0.002 in the checkpoint, 0.1 now" in message and "env.name" in message


def test_resumable_keys_may_change(tmp_path: Path) -> None:
    longer = {**CONFIG, "algorithm": {"lr": 0.002, "n_epochs": 40}, "silent": True, "resume": str(tmp_path),
              "torch_threads": 2}
    check_same_config(_checkpoint(), longer, tmp_path)


def test_comparable_config_flattens_to_dotted_keys() -> None:
    assert comparable_config(CONFIG) == {"env.name": "CartPole-v1", "algorithm.lr": 0.002,
                                         "model.hidden_units.0": 64, "model.hidden_units.1": 64}
