"""The peer of benchmarks/train_bc_cartpole.py: d3rlpy's DiscreteBC on the benchmark's training tensors.

Runs in a venv of its own (d3rlpy 2.8 pins gymnasium 1.0.0), started by the benchmark:
``<peer venv>/bin/python benchmarks/peers/d3rlpy_bc.py --data train.npz --seed 0 --target 475 ...``. Trains
epoch by epoch (``fitter``; each epoch the benchmark's number of mini-batches of its batch size), times only
the training (wall-clock and process CPU time), evaluates the greedy policy after each epoch on CartPole-v1
(seeds 0 to episodes - 1, not timed) and prints one JSON line: seconds and epochs to the target return,
per-epoch seconds and returns.
"""

import argparse
import json
import time

import d3rlpy
import gymnasium as gym
import numpy as np
import torch


def evaluate(algo: "d3rlpy.algos.DiscreteBC", episodes: int) -> float:
    env = gym.make("CartPole-v1")
    returns = []
    for seed in range(episodes):
        observation, _ = env.reset(seed=seed)
        done, total = False, 0.0
        while not done:
            action = int(algo.predict(observation[None].astype(np.float32))[0])
            observation, reward, terminated, truncated, _ = env.step(action)
            total += float(reward)
            done = terminated or truncated
        returns.append(total)
    return float(np.mean(returns))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--target", type=float, required=True)
    parser.add_argument("--max-epochs", type=int, default=30)
    parser.add_argument("--steps-per-epoch", type=int, required=True)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--eval-episodes", type=int, default=10)
    args = parser.parse_args()
    torch.set_num_threads(1)
    d3rlpy.seed(args.seed)
    data = np.load(args.data)
    lengths = data["episode_lengths"]
    ends = np.cumsum(lengths) - 1
    timeouts = np.zeros(len(data["actions"]), np.float32)
    timeouts[ends] = 1.0  # every episode ends here (for BC it does not matter how)
    count = len(data["actions"])
    dataset = d3rlpy.dataset.MDPDataset(
        observations=data["observations"].astype(np.float32), actions=data["actions"].astype(np.int64),
        rewards=np.ones(count, np.float32), terminals=np.zeros(count, np.float32), timeouts=timeouts,
        action_space=d3rlpy.constants.ActionSpace.DISCRETE, action_size=2)
    # The benchmark's net: 64-64 tanh (model=flatten_concat), its batch size and learning rate.
    encoder = d3rlpy.models.encoders.VectorEncoderFactory(hidden_units=[64, 64], activation="tanh")
    algo = d3rlpy.algos.DiscreteBCConfig(batch_size=args.batch_size, learning_rate=args.lr,
                                         encoder_factory=encoder).create(device="cpu:0")
    algo.build_with_dataset(dataset)  # building the nets is not timed, as the benchmark's own are not
    fitter = algo.fitter(dataset, n_steps=args.steps_per_epoch * args.max_epochs,
                         n_steps_per_epoch=args.steps_per_epoch, show_progress=False, save_interval=10**9,
                         logger_adapter=d3rlpy.logging.NoopAdapterFactory())
    epoch_seconds, epoch_cpu_seconds, returns = [], [], []
    while not returns or returns[-1] < args.target:
        wall, cpu = time.perf_counter(), time.process_time()
        try:
            next(fitter)
        except StopIteration:
            break
        epoch_seconds.append(time.perf_counter() - wall)
        epoch_cpu_seconds.append(time.process_time() - cpu)
        returns.append(evaluate(algo, args.eval_episodes))
    done = bool(returns) and returns[-1] >= args.target
    print(json.dumps({"peer": f"d3rlpy DiscreteBC {d3rlpy.__version__}",
                      "seconds_to_target": sum(epoch_seconds) if done else None,
                      "cpu_seconds_to_target": sum(epoch_cpu_seconds) if done else None,
                      "epochs_to_target": len(returns) if done else None, "epoch_seconds": epoch_seconds,
                      "epoch_cpu_seconds": epoch_cpu_seconds, "returns": returns}))


if __name__ == "__main__":
    main()
