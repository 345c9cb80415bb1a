"""Tiny training configs for the run-directory tests: CartPole, 2 envs, 2 updates of 16 steps per epoch."""

from collections.abc import Callable
from typing import Any

import pytest

from maze_engine.config import compose_config

TINY = ["model=flatten_concat", "algorithm.epoch_length=2", "algorithm.n_rollout_steps=16",
        "algorithm.eval_repeats=1", "algorithm.patience=0", "runner.n_envs=2", "runner.n_eval_envs=1",
        "silent=true"]
"""A2C, one evaluation episode per epoch, no early stop: an epoch takes a fraction of a second."""


@pytest.fixture
def tiny_cfg() -> Callable[..., Any]:
    """``tiny_cfg("algorithm.n_epochs=3", ...)``: a composed ``conf_train`` with the TINY settings."""

    def compose(*overrides: str) -> Any:
        return compose_config("conf_train", [*TINY, *overrides])

    return compose
