"""Cost of AgentDeployment.act on CartPole (RandomPolicy, LogStatsWrapper) against a bare gymnasium step.

Prints one JSON line: mean and p99 of ``act`` and of the bare ``env.step(env.action_space.sample())``
measured in the same process, their ratio (target: mean <= 2.5x), and the per-state cost of ``act_batch``
over 256 deployments with the policy's own time taken out (target: <= 10 us per state).

    .venv/bin/python benchmarks/deployment_act.py [--steps 20000] [--batch 256] [--rounds 200]
"""

import argparse
import gc
import json
import time
from typing import Any

import gymnasium as gym
import numpy as np

from maze_engine import (
    AgentDeployment,
    DeploymentFactory,
    GymMazeEnv,
    LogStatsWrapper,
    RandomPolicy,
    act_batch,
)

ENV_NAME = "CartPole-v1"


def _summary(samples_ns: list[int]) -> dict[str, float]:
    array = np.asarray(samples_ns, dtype=np.float64) / 1000.0
    return {"mean_us": round(float(array.mean()), 3), "p99_us": round(float(np.percentile(array, 99)), 3)}


def bare_step(steps: int) -> dict[str, float]:
    """The baseline: a bare gymnasium step with a sampled action, timed per call."""
    env = gym.make(ENV_NAME)
    env.reset(seed=0)
    env.action_space.seed(0)
    samples = []
    clock = time.perf_counter_ns
    for _ in range(steps):
        start = clock()
        _, _, terminated, truncated, _ = env.step(env.action_space.sample())
        samples.append(clock() - start)
        if terminated or truncated:
            env.reset()
    return _summary(samples)


def deployment_act(steps: int) -> dict[str, float]:
    """``act`` timed per call; the external env's own step and the episode's close are not timed."""
    env = LogStatsWrapper.wrap(GymMazeEnv(ENV_NAME))
    deployment = AgentDeployment(RandomPolicy(env.action_spaces_dict, seed=0), env)
    external = gym.make(ENV_NAME)
    state, info = external.reset(seed=0)
    reward: Any = None
    done = False
    samples = []
    clock = time.perf_counter_ns
    for _ in range(steps):
        start = clock()
        action = deployment.act(state, reward, done, info)
        samples.append(clock() - start)
        state, reward, terminated, truncated, info = external.step(action)
        reward = float(reward)
        done = terminated or truncated
        if done:
            deployment.close(state, reward, done, info)
            state, info = external.reset()
            reward, done = None, False
    deployment.close()
    return _summary(samples)


class _TimedPolicy:
    """Forwards to a policy and adds up the time spent in it, so it can be taken out of the batch's cost."""

    def __init__(self, policy: Any) -> None:
        self.policy = policy
        self.elapsed_ns = 0
        self.calls = 0

    def compute_actions(self, observations: Any, actor_id: Any = None, deterministic: bool = False) -> Any:
        start = time.perf_counter_ns()
        actions = self.policy.compute_actions(observations, actor_id, deterministic)
        self.elapsed_ns += time.perf_counter_ns() - start
        self.calls += 1
        return actions


def batch_act(batch: int, rounds: int) -> dict[str, float]:
    """``act_batch`` over ``batch`` open deployments; the external envs' steps are not timed."""
    factory = DeploymentFactory({"_target_": "maze_engine.RandomPolicy", "seed": 0},
                                {"_target_": "maze_engine.make_gym_maze_env", "name": ENV_NAME},
                                wrappers={"maze_engine.LogStatsWrapper": {}})
    policy = _TimedPolicy(factory.policy)
    externals = [gym.make(ENV_NAME) for _ in range(batch)]
    deployments = [factory.create() for _ in range(batch)]
    inputs: list[tuple[Any, Any, bool, Any]] = [(env.reset(seed=i)[0], None, False, {})
                                                 for i, env in enumerate(externals)]
    total_ns = 0
    for _ in range(rounds):
        start = time.perf_counter_ns()
        actions = act_batch(list(zip(deployments, inputs, strict=True)), policy)
        total_ns += time.perf_counter_ns() - start
        for index, (external, action) in enumerate(zip(externals, actions, strict=True)):
            state, reward, terminated, truncated, info = external.step(action)
            if terminated or truncated:
                deployments[index].close(state, float(reward), True, info)
                inputs[index] = (external.reset()[0], None, False, {})
            else:
                inputs[index] = (state, float(reward), False, info)
    states = batch * rounds
    return {"per_state_us": round((total_ns - policy.elapsed_ns) / states / 1000.0, 3),
            "per_state_with_policy_us": round(total_ns / states / 1000.0, 3),
            "policy_calls_per_batch": policy.calls / rounds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20000)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=200)
    args = parser.parse_args()
    gc.collect()
    # Warm both paths up, then measure them interleaved so drift in machine load hits both alike.
    bare_step(1000)
    deployment_act(1000)
    bare_runs, act_runs = [], []
    for _ in range(3):
        bare_runs.append(bare_step(args.steps // 3))
        act_runs.append(deployment_act(args.steps // 3))
    bare = {key: round(float(np.median([run[key] for run in bare_runs])), 3) for key in bare_runs[0]}
    act = {key: round(float(np.median([run[key] for run in act_runs])), 3) for key in act_runs[0]}
    batched = batch_act(args.batch, args.rounds)
    print(json.dumps({
        "benchmark": "deployment_act",
        "env": ENV_NAME,
        "act_mean_us": act["mean_us"],
        "act_p99_us": act["p99_us"],
        "bare_step_mean_us": bare["mean_us"],
        "bare_step_p99_us": bare["p99_us"],
        "ratio_mean": round(act["mean_us"] / bare["mean_us"], 3),
        "ratio_p99": round(act["p99_us"] / bare["p99_us"], 3),
        "target_ratio_mean": 2.5,
        "batch_size": args.batch,
        "batch_per_state_us_excl_policy": batched["per_state_us"],
        "batch_per_state_us_incl_policy": batched["per_state_with_policy_us"],
        "batch_policy_calls_per_batch": batched["policy_calls_per_batch"],
        "batch_ratio_to_bare_step": round(batched["per_state_us"] / bare["mean_us"], 3),
        "target_batch_per_state_us": 10.0,
    }))


if __name__ == "__main__":
    main()
