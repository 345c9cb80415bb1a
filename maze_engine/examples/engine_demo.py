"""Engine demo: a CartPole rollout with statistics, then an AgentDeployment driven by an external env.

Run with ``make demo-engine`` or ``python -m maze_engine.examples.engine_demo``; it takes a few seconds.

1. ParallelRolloutRunner rolls a random policy out for 20 episodes in two worker processes, prints the
   statistics table and records trajectories, which are read back at the end.
2. AgentDeployment packages a policy with its wrapper stack (here: statistics logging) while a plain
   gymnasium CartPole, standing in for a production system, asks it for actions state by state. The control
   flow is inverted: the external env steps itself and queries the agent, as in production.
"""

import tempfile
from pathlib import Path

import gymnasium as gym

from maze_engine import (
    AgentDeployment,
    ConsoleStatsWriter,
    GymMazeEnv,
    LogStatsWrapper,
    ParallelRolloutRunner,
    RandomPolicy,
    read_trajectories,
    stats_writers,
)
from maze_engine.wrappers.wrapper import find_wrapper

SEED = 0


def rollout_demo(output_dir: Path) -> None:
    """Part 1: the rollout runner from plain Python (``maze-run`` does the same from the command line)."""
    print("== 1. Rollout: random policy on CartPole-v1, 20 episodes in 2 processes ==")
    runner = ParallelRolloutRunner(n_episodes=20, n_processes=2, max_episode_steps=200, seed=SEED,
                                   record_trajectory=True, record_event_logs=False)
    stats = runner.run(env={"_target_": "maze_engine.make_gym_maze_env", "name": "CartPole-v1"},
                       policy={"_target_": "maze_engine.RandomPolicy"}, output_dir=output_dir)
    trajectories = list(read_trajectories(output_dir / "trajectory_data"))
    print(f"mean return {stats['episode_return']['mean']:.1f}; {len(trajectories)} trajectories "
          f"({sum(len(t) for t in trajectories)} steps) recorded and read back\n")


def deployment_demo(n_episodes: int = 3) -> None:
    """Part 2: the external env drives; the deployment answers each state with a maze_action."""
    print(f"== 2. AgentDeployment: an external gymnasium CartPole drives the agent, {n_episodes} episodes ==")
    env = GymMazeEnv("CartPole-v1")
    deployment = AgentDeployment(policy=RandomPolicy(env.action_spaces_dict, seed=SEED), env=env,
                                 wrappers={"maze_engine.LogStatsWrapper": {"logging_prefix": "deployment"}})
    log_stats = find_wrapper(deployment.env, LogStatsWrapper)
    assert log_stats is not None  # configured just above

    external_env = gym.make("CartPole-v1")
    for episode in range(n_episodes):
        maze_state, info = external_env.reset(seed=SEED + episode)
        reward, done = None, False
        while not done:
            maze_action = deployment.act(maze_state, reward, done, info)
            maze_state, reward, terminated, truncated, info = external_env.step(maze_action)
            done = terminated or truncated
        # The final state goes through the stack too; wrappers finish the episode (statistics, recordings).
        deployment.close(maze_state, reward, done, info)
        episode_stats = log_stats.last_episode_stats
        assert episode_stats is not None  # the episode just ended
        print(f"episode {episode}: return {episode_stats.episode_return:.0f}, "
              f"length {episode_stats.episode_length}, truncated {episode_stats.truncated}")
    external_env.close()
    with stats_writers(ConsoleStatsWriter()):
        log_stats.write_epoch_stats()


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="maze_engine_demo_") as directory:
        rollout_demo(Path(directory))
    deployment_demo()


if __name__ == "__main__":
    main()
