"""AgentDeployment built the seed's ways, driven by an external CartPole: episodes, close, continuing."""

import gc
import weakref
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import pytest

from maze_engine import (
    AgentDeployment,
    ConsoleStatsWriter,
    ExternalCoreEnv,
    GymMazeEnv,
    LogStatsWrapper,
    MazeError,
    RandomPolicy,
    TimeLimitWrapper,
    read_trajectories,
    stats_writers,
)

POLICY_CONFIG = {"_target_": "maze_engine.RandomPolicy", "seed": 3}
ENV_CONFIG = {"_target_": "maze_engine.make_gym_maze_env", "name": "CartPole-v1"}
LOG_STATS_MAZE_PATH = "maze.core.wrappers.log_stats_wrapper.LogStatsWrapper"


def _instances() -> AgentDeployment:
    env = LogStatsWrapper.wrap(GymMazeEnv("CartPole-v1"))
    return AgentDeployment(policy=RandomPolicy(env.action_spaces_dict, seed=3), env=env)


def _configs() -> AgentDeployment:
    return AgentDeployment(policy=POLICY_CONFIG, env=ENV_CONFIG, wrappers={LOG_STATS_MAZE_PATH: {}})


def _mixed() -> AgentDeployment:
    env = GymMazeEnv("CartPole-v1")
    return AgentDeployment(policy=RandomPolicy(env.action_spaces_dict, seed=3), env=ENV_CONFIG,
                           wrappers=[{"_target_": "maze_engine.LogStatsWrapper"}])


@pytest.mark.parametrize("build", [_instances, _configs, _mixed], ids=["instances", "configs", "mixed"])
def test_seed_full_example(build: Any, kit: Any, capsys: pytest.CaptureFixture[str]) -> None:
    deployment = build()
    assert isinstance(deployment.env, LogStatsWrapper)
    assert isinstance(deployment.env.maze_env.core_env, ExternalCoreEnv)
    episode = kit.drive_episode(deployment, seed=0)
    stats = deployment.env.last_episode_stats
    assert stats.episode_length == len(episode.actions)
    assert stats.episode_return == sum(episode.rewards)
    with stats_writers(ConsoleStatsWriter()):
        written = deployment.env.write_epoch_stats()
    assert written["episode_return"]["count"] == 1
    assert written["step_reward"]["count"] == len(episode.actions)
    assert "episode_return" in capsys.readouterr().out


def test_same_seeds_same_actions_whichever_way_it_is_built(kit: Any) -> None:
    actions = [kit.drive_episode(build(), seed=5).actions for build in (_instances, _configs, _mixed)]
    assert actions[0] == actions[1] == actions[2]


def test_continued_episodes_count_each_episode_once(kit: Any) -> None:
    deployment = _instances()
    episodes = [kit.drive_episode(deployment, seed=seed) for seed in range(4)]
    stats = deployment.env.get_stats()
    assert stats["episode_return"]["count"] == 4
    assert stats["episode_length"]["max"] == max(len(episode.actions) for episode in episodes)
    assert stats["step_reward"]["count"] == sum(len(episode.actions) for episode in episodes)


def test_act_after_done_starts_a_new_episode(kit: Any) -> None:
    spy_holder: dict[str, Any] = {}

    def spy(env: Any) -> Any:
        spy_holder["spy"] = kit.SpyWrapper(env)
        return spy_holder["spy"]

    deployment = AgentDeployment(POLICY_CONFIG, ENV_CONFIG, wrappers=[spy, LogStatsWrapper])
    state = np.zeros(4, dtype=np.float32)
    deployment.act(state, None, False, {})
    deployment.act(state, 1.0, True, {})  # the final state arrives through act
    assert deployment.env.last_episode_stats.episode_length == 1
    deployment.act(state, None, False, {})  # a new episode: the stack flushes and resets
    # Each act sends its action down the stack, where the step waits for the next state; the step taken
    # with the done state's action never completes: the stack is flushed (reset) and reset again.
    assert spy_holder["spy"].calls == ["reset", "step", "step", "reset", "reset", "step"]
    assert deployment.env.get_stats()["step_reward"]["count"] == 1
    deployment.close()
    assert deployment.env.get_stats()["episode_return"]["count"] == 1  # the open episode had no steps


def test_close_without_state_counts_a_cut_short_episode() -> None:
    deployment = _instances()
    state = np.zeros(4, dtype=np.float32)
    for reward in (None, 1.0, 1.0):
        deployment.act(state, reward, False, {})
    deployment.close()
    stats = deployment.env.last_episode_stats
    assert (stats.episode_length, stats.episode_return, stats.truncated) == (2, 2.0, True)


def test_close_with_a_final_state_that_is_not_done_truncates() -> None:
    deployment = _instances()
    state = np.zeros(4, dtype=np.float32)
    deployment.act(state, None, False, {})
    deployment.close(state, 1.0, False, {})
    stats = deployment.env.last_episode_stats
    assert (stats.episode_length, stats.truncated) == (1, True)


def test_close_and_reset_are_noops_without_an_episode() -> None:
    deployment = _instances()
    deployment.close()
    deployment.reset()
    deployment.close(np.zeros(4, dtype=np.float32), 1.0, True, {})
    assert deployment.env.get_stats()["episode_return"]["count"] == 0
    assert not deployment.episode_open


def test_reset_ends_the_episode_and_the_next_act_starts_another() -> None:
    deployment = _instances()
    state = np.zeros(4, dtype=np.float32)
    deployment.act(state, None, False, {})
    deployment.act(state, 1.0, False, {})
    deployment.reset()
    assert not deployment.episode_open
    deployment.act(state, None, False, {})  # reward None is fine again: a first state
    deployment.close(state, 1.0, True, {})
    assert deployment.env.get_stats()["episode_length"]["count"] == 2


def test_time_limit_wrapper_truncates_inside_the_deployment(kit: Any) -> None:
    deployment = AgentDeployment(POLICY_CONFIG, ENV_CONFIG, wrappers={
        "maze_engine.TimeLimitWrapper": {"max_episode_steps": 3}, "maze_engine.LogStatsWrapper": None})
    assert isinstance(deployment.env.env, TimeLimitWrapper)
    state = np.zeros(4, dtype=np.float32)
    for reward in (None, 1.0, 1.0, 1.0):
        deployment.act(state, reward, False, {})
    assert deployment.env.last_episode_stats.truncated
    assert deployment.env.last_episode_stats.episode_length == 3


def test_closed_deployment_releases_its_greenlet() -> None:
    deployment = _instances()
    state = np.zeros(4, dtype=np.float32)
    deployment.act(state, None, False, {})
    stack_greenlet = weakref.ref(deployment._greenlet)
    deployment.close(state, 1.0, True, {})
    assert not deployment.episode_open
    gc.collect()
    assert stack_greenlet() is None


def test_dropped_deployment_with_an_open_episode_is_freed() -> None:
    deployment = _instances()
    deployment.act(np.zeros(4, dtype=np.float32), None, False, {})
    stack_greenlet = weakref.ref(deployment._greenlet)
    dropped = weakref.ref(deployment)
    del deployment
    gc.collect()
    assert dropped() is None and stack_greenlet() is None


def test_policy_of_its_own_is_reset_each_episode(kit: Any) -> None:
    class CountingResets(RandomPolicy):
        resets = 0

        def reset(self) -> None:
            self.resets += 1

    env = GymMazeEnv("CartPole-v1")
    policy = CountingResets(env.action_spaces_dict, seed=0)
    deployment = AgentDeployment(policy, env)
    for seed in range(3):
        kit.drive_episode(deployment, seed=seed, max_steps=2)
    assert policy.resets == 3


def test_env_cannot_be_stepped_directly() -> None:
    deployment = _instances()
    deployment.act(np.zeros(4, dtype=np.float32), None, False, {})
    with pytest.raises(MazeError, match="cannot be stepped directly"):
        deployment.env.step({"action": 0})


def test_dict_state_space_and_actor_ids_of_a_custom_gym_env() -> None:
    class DictEnv(gym.Env[Any, Any]):
        observation_space = gym.spaces.Dict({"position": gym.spaces.Box(-1, 1, (2,)),
                                             "mode": gym.spaces.Discrete(3)})
        action_space = gym.spaces.Discrete(2)

        def reset(self, *, seed: int | None = None, options: Any = None) -> Any:
            return self.observation_space.sample(), {}

        def step(self, action: Any) -> Any:
            return self.observation_space.sample(), 1.0, False, False, {}

    deployment = AgentDeployment(POLICY_CONFIG, GymMazeEnv(DictEnv()))
    state = {"position": [0.5, -0.5], "mode": 2}  # plain lists and ints, as a producer would send them
    action = deployment.act(state, None, False, None)
    assert action in (0, 1)
    assert deployment.env.maze_env.last_maze_state["position"].dtype == np.float32


def test_trajectories_are_written_when_episodes_end(kit: Any, tmp_path: Path) -> None:
    deployment = AgentDeployment(POLICY_CONFIG, ENV_CONFIG, wrappers=[
        {"_target_": "maze_engine.TrajectoryRecordingWrapper", "output_dir": str(tmp_path)}])
    episode = kit.drive_episode(deployment, seed=0)  # ends with done on the final state given to close
    state = np.zeros(4, dtype=np.float32)
    deployment.act(state, None, False, {})
    deployment.act(state, 1.0, False, {})
    deployment.close()  # cut short: written as incomplete
    complete, cut_short = read_trajectories(tmp_path)
    assert complete.complete and len(complete) == len(episode.actions)
    assert complete.maze_actions.tolist() == [int(action) for action in episode.actions]
    assert complete.rewards.tolist() == episode.rewards
    assert not cut_short.complete and len(cut_short) == 1
