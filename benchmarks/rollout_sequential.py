"""Sequential rollout throughput: SequentialRolloutRunner with statistics vs a bare gymnasium loop.

Both run CartPole-v1 with random actions in the same process, interleaved over several rounds so that load
from other processes hits both alike; the best round of each is reported. Prints one JSON line with the
steps per second of both and their ratio (target: runner >= 0.35x the bare loop).

    .venv/bin/python benchmarks/rollout_sequential.py [--steps 200000] [--rounds 3]
"""

import argparse
import json
import tempfile
import time

import gymnasium as gym

from maze_engine import GymMazeEnv, RandomPolicy, SequentialRolloutRunner

TARGET_RATIO = 0.35


def bare_loop(steps: int, seed: int) -> float:
    """Steps per second of ``env.step(env.action_space.sample())``, resetting on done."""
    env = gym.make("CartPole-v1")
    env.action_space.seed(seed)
    env.reset(seed=seed)
    start = time.perf_counter()
    for _ in range(steps):
        _, _, terminated, truncated, _ = env.step(env.action_space.sample())
        if terminated or truncated:
            env.reset()
    elapsed = time.perf_counter() - start
    env.close()
    return steps / elapsed


def runner_loop(steps: int, seed: int, output_dir: str, max_episode_steps: int | None = None) -> float:
    """Steps per second of the sequential runner (statistics on, no recording), about ``steps`` steps.

    ``max_episode_steps`` adds the runner's TimeLimitWrapper (the CLI default is 200).
    """
    env = GymMazeEnv("CartPole-v1")
    policy = RandomPolicy(env.action_spaces_dict)
    # Random CartPole episodes last about 22 steps; the runner reports the exact count it took.
    runner = SequentialRolloutRunner(n_episodes=max(1, steps // 22), max_episode_steps=max_episode_steps,
                                     seed=seed, silent=True)
    start = time.perf_counter()
    stats = runner.run_with(env=env, wrappers=None, agent=policy, output_dir=output_dir)
    elapsed = time.perf_counter() - start
    return stats["step_reward"]["count"] / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    bare, runner, limited = [], [], []
    with tempfile.TemporaryDirectory() as output_dir:
        for round_index in range(args.rounds):
            bare.append(bare_loop(args.steps, seed=round_index))
            runner.append(runner_loop(args.steps, seed=round_index, output_dir=output_dir))
            limited.append(runner_loop(args.steps, seed=round_index, output_dir=output_dir,
                                       max_episode_steps=200))
    result = {
        "benchmark": "rollout_sequential",
        "env": "CartPole-v1",
        "steps_per_round": args.steps,
        "rounds": args.rounds,
        "bare_gym_steps_per_s": round(max(bare)),
        "runner_steps_per_s": round(max(runner)),
        "ratio": round(max(runner) / max(bare), 3),
        "runner_with_time_limit_steps_per_s": round(max(limited)),
        "ratio_with_time_limit": round(max(limited) / max(bare), 3),
        "target_ratio": TARGET_RATIO,
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
