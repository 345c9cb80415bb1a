"""ExternalCoreEnv: returns the state it was given, suspends on step, and refuses to be stepped directly."""

import greenlet
import numpy as np
import pytest
from gymnasium import spaces

from maze_engine import ActorID, EventRecord, ExternalCoreEnv, GymMazeEnv, MazeError
from maze_engine.deployment.external_core_env import EpisodeEnded


def test_reset_returns_the_current_state_and_step_suspends_to_the_caller() -> None:
    core = ExternalCoreEnv(spaces.Box(-1, 1, (2,)))
    core.maze_state = np.ones(2)
    core.events = [EventRecord("e")]
    core.current_actor_id = ActorID(0, 1)
    assert core.reset() is core.maze_state
    assert core.actor_id() == ActorID(0, 1) and [e.name for e in core.get_step_events()] == ["e"]
    assert core.maze_state_space.shape == (2,)

    stepper = greenlet.greenlet(lambda: core.step("maze action"))
    assert stepper.switch() == "maze action"  # the caller receives the maze_action...
    assert stepper.switch(("state", 1.0, False, {})) == ("state", 1.0, False, {})  # ...and answers it


def test_step_outside_a_deployment_is_refused() -> None:
    with pytest.raises(MazeError, match="cannot be stepped directly"):
        ExternalCoreEnv().step(0)


def test_step_after_the_episode_ended_unwinds() -> None:
    core = ExternalCoreEnv()
    core.closing = True
    with pytest.raises(EpisodeEnded):
        core.step(0)


def test_gym_core_env_exposes_its_state_space() -> None:
    env = GymMazeEnv("CartPole-v1")
    assert env.core_env.maze_state_space is env.gym_env.observation_space
