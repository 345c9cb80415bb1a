"""In-process cost of the worker's batch path: 256 CartPole episodes stepped as one batch.

``EpisodeTable.handle`` does what the worker does with a batch once it is decoded: sequence checks, every
deployment's wrapper stack (with LogStatsWrapper), one forward pass of an untrained 64-64 MLP TorchPolicy for
the whole batch, and the encoded replies. The baseline, measured in the same run, steps the same deployments
one state at a time with ``AgentDeployment.act`` (a policy call per state). Prints one JSON line: microseconds
per state for both, the speed-up, and whether the batch path meets the target of <= 10 us per state; a bare
gymnasium CartPole step is timed too, to tell a slow machine from a slow worker.
Times are CPU time of this process (torch on one thread, as in the worker), so other processes on a shared
machine do not inflate them. Like ``maze-worker``, each run exempts the heap built before serving (imports,
policy, factory) from garbage collection (``worker/serving/heap.py``); the figure without that is printed too.

    .venv/bin/python benchmarks/worker_batch_step.py [--episodes 256] [--rounds 200]
"""

import argparse
import gc
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from maze_engine import GymMazeEnv
from maze_engine.perception.composers.model import build_model_composers_from_spaces
from maze_engine.policies.torch_io import save_torch_policy
from maze_engine.policies.torch_policy import TorchPolicy
from worker.episodes.table import EpisodeTable
from worker.serving.factory import build_factory
from worker.serving.heap import freeze_startup_heap
from worker.settings import EpisodeSettings
from worker.wire.protocol import StateMessage

ENV = {"_target_": "maze_engine.make_gym_maze_env", "name": "CartPole-v1"}
MODEL_CONFIG = Path(__file__).resolve().parent.parent / "conf" / "model" / "flatten_concat.yaml"
TARGET_US_PER_STATE = 10.0


def untrained_torch_policy() -> tuple[TorchPolicy, Any, GymMazeEnv]:
    """An untrained 64-64 Tanh MLP for CartPole (conf/model/flatten_concat.yaml), its config and env."""
    env = GymMazeEnv("CartPole-v1")
    model_config = yaml.safe_load(MODEL_CONFIG.read_text(encoding="utf-8"))
    composer, _ = build_model_composers_from_spaces(model_config, env.action_spaces_dict,
                                                    env.observation_spaces_dict)
    return composer.policy.eval(), model_config, env


def save_untrained_policy(run_dir: Path) -> Path:
    """Write the untrained policy as a run directory that ``policy=torch_policy input_dir=...`` loads."""
    policy, model_config, env = untrained_torch_policy()
    save_torch_policy(run_dir, policy, model_config, env.observation_spaces_dict, env.action_spaces_dict)
    return run_dir


def _states(count: int, rng: np.random.Generator) -> list[list[float]]:
    # Plain lists, as msgpack decodes them off the wire.
    return [(rng.normal(size=4) * 0.05).astype(np.float32).tolist() for _ in range(count)]


def batch_path(episodes: int, rounds: int, freeze: bool = True) -> float:
    """Microseconds per state through EpisodeTable.handle with batches of ``episodes`` states."""
    policy, _, _ = untrained_torch_policy()
    factory = build_factory(policy, ENV)
    if freeze:  # where maze-worker does it: policy and factory built, no episode open yet
        freeze_startup_heap()
    table = EpisodeTable(factory, EpisodeSettings(max_open=episodes * 2))
    rng = np.random.default_rng(0)
    ids = [f"episode-{index}" for index in range(episodes)]
    table.handle([StateMessage(1, episode, 0, state, None, False, None)
                  for episode, state in zip(ids, _states(episodes, rng), strict=True)])
    elapsed = 0.0
    for seq in range(1, rounds + 1):
        # Built just before its turn and dropped after, as the worker decodes each batch off the wire: a
        # benchmark holding every round's states at once would make the garbage collector walk them all.
        batch = [StateMessage(1, episode, seq, state, 1.0, False, None)
                 for episode, state in zip(ids, _states(episodes, rng), strict=True)]
        start = time.process_time()
        answers = table.handle(batch)
        elapsed += time.process_time() - start
    gc.unfreeze()
    assert all(answer.code is None for answer in answers), "the batch path answered with errors"
    return elapsed / (episodes * rounds) * 1e6


def one_by_one(episodes: int, rounds: int) -> float:
    """Microseconds per state with ``act`` on each deployment (the policy runs once per state)."""
    policy, _, _ = untrained_torch_policy()
    factory = build_factory(policy, ENV)
    freeze_startup_heap()
    deployments = [factory.create() for _ in range(episodes)]
    rng = np.random.default_rng(0)
    for deployment, state in zip(deployments, _states(episodes, rng), strict=True):
        deployment.act(state, None, False, None)
    steps = [_states(episodes, rng) for _ in range(rounds)]
    start = time.process_time()
    for states in steps:
        for deployment, state in zip(deployments, states, strict=True):
            deployment.act(state, 1.0, False, None)
    elapsed = time.process_time() - start
    gc.unfreeze()
    return elapsed / (episodes * rounds) * 1e6


def bare_gym_step(steps: int = 20000) -> float:
    """Calibration: CPU microseconds of a bare gymnasium CartPole step with a sampled action."""
    import gymnasium as gym

    env = gym.make("CartPole-v1")
    env.reset(seed=0)
    env.action_space.seed(0)
    start = time.process_time()
    for _ in range(steps):
        _, _, terminated, truncated, _ = env.step(env.action_space.sample())
        if terminated or truncated:
            env.reset()
    return (time.process_time() - start) / steps * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--episodes", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=3, help="best of this many runs of each")
    args = parser.parse_args()
    torch.set_num_threads(1)  # as maze-worker does (torch_threads: 1)
    batched = min(batch_path(args.episodes, args.rounds) for _ in range(args.repeats))
    unfrozen = min(batch_path(args.episodes, args.rounds, freeze=False) for _ in range(args.repeats))
    single = min(one_by_one(args.episodes, max(args.rounds // 4, 5)) for _ in range(args.repeats))
    gym_step = min(bare_gym_step() for _ in range(args.repeats))
    print(json.dumps({
        "benchmark": "worker_batch_step", "episodes_per_batch": args.episodes,
        "batch_us_per_state": round(batched, 2), "batch_us_per_state_heap_not_frozen": round(unfrozen, 2),
        "one_by_one_us_per_state": round(single, 2),
        "speedup": round(single / batched, 2), "bare_gym_step_us": round(gym_step, 2),
        "batch_state_in_gym_steps": round(batched / gym_step, 2),
        "target_us_per_state": TARGET_US_PER_STATE, "meets_target": batched <= TARGET_US_PER_STATE,
    }))


if __name__ == "__main__":
    main()
