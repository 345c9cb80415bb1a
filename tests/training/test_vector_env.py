"""Vectorised envs: stacking, auto-reset, truncation, statistics, worker processes."""

from typing import Any

import gymnasium as gym
import numpy as np
import pytest

from maze_engine import ConfigError, GymMazeEnv
from maze_engine.core.env.structured_env import StructuredEnv
from maze_engine.training.vector_env import InProcessVectorEnv, SubprocessVectorEnv, VectorEnv


def _short_cartpole() -> GymMazeEnv:
    # A time limit of 5 steps truncates every episode that survives that long.
    return GymMazeEnv(gym.make("CartPole-v1", max_episode_steps=5))


def _run(venv: VectorEnv, n_steps: int) -> list[Any]:
    venv.seed(7)
    venv.reset()
    return [venv.step({"action": np.zeros(venv.n_envs, dtype=np.int64)}) for _ in range(n_steps)]


def test_in_process_stacks_and_resets() -> None:
    venv = InProcessVectorEnv.from_factory(_short_cartpole, 3)
    steps = _run(venv, 12)
    assert steps[0].observations["observation"].shape == (3, 4)
    assert steps[0].rewards.dtype == np.float32
    ended = sum(int(step.dones.sum()) for step in steps)
    assert ended == sum(len(step.finished_episodes) for step in steps) >= 3
    aggregates = venv.epoch_aggregates()
    assert aggregates["episode_return"].count == ended
    assert venv.epoch_aggregates()["episode_return"].count == 0  # a new epoch starts


def test_truncation_keeps_final_observation() -> None:
    # Alternating actions keep the pole up, so the 5-step limit truncates (not terminates) the episode.
    venv = InProcessVectorEnv.from_factory(_short_cartpole, 2)
    venv.seed(0)
    venv.reset()
    for t in range(5):
        step = venv.step({"action": np.full(2, t % 2, dtype=np.int64)})
    assert step.dones.all() and step.truncated.all()
    assert set(step.final_observations) == {0, 1}
    assert step.finished_episodes[0].episode_length == 5


def test_same_seed_same_observations() -> None:
    first = _run(InProcessVectorEnv.from_factory(_short_cartpole, 2), 3)
    second = _run(InProcessVectorEnv.from_factory(_short_cartpole, 2), 3)
    np.testing.assert_array_equal(first[-1].observations["observation"],
                                  second[-1].observations["observation"])


def test_subprocess_matches_in_process() -> None:
    # A lambda factory: sent to the workers with cloudpickle.
    with SubprocessVectorEnv(lambda: _short_cartpole(), n_envs=3, n_processes=2) as venv:
        remote = _run(venv, 8)
        aggregates = venv.epoch_aggregates()
    local = _run(InProcessVectorEnv.from_factory(_short_cartpole, 3), 8)
    for a, b in zip(remote, local, strict=True):
        np.testing.assert_array_equal(a.observations["observation"], b.observations["observation"])
        np.testing.assert_array_equal(a.dones, b.dones)
        assert set(a.final_observations) == set(b.final_observations)
    assert aggregates["episode_return"].count == sum(int(step.dones.sum()) for step in remote)


def _broken_factory() -> StructuredEnv:
    raise RuntimeError("no such env here")


def test_worker_failure_is_reported() -> None:
    with pytest.raises(RuntimeError, match="no such env here"):
        SubprocessVectorEnv(_broken_factory, n_envs=1)


@pytest.mark.parametrize("kwargs, field", [({"n_envs": 0}, "runner.n_envs"),
                                           ({"n_envs": 1, "start_method": "teleport"}, "runner.start_method"),
                                           ({"n_envs": 1, "n_processes": -1}, "runner.n_processes")])
def test_bad_runner_values_name_the_field(kwargs: dict[str, Any], field: str) -> None:
    with pytest.raises(ConfigError, match=field):
        SubprocessVectorEnv(_short_cartpole, **kwargs)
