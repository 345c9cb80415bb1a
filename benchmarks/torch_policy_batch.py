"""Batched acting of a TorchPolicy (CartPole, 64-64 FlattenConcat MLP) against its baselines.

Prints one JSON line with, per batch of observations:
- ``batched_us``: ``TorchPolicy.compute_actions`` (numpy dicts in, numpy action dicts out, one forward pass);
- ``per_item_us``: the same observations through ``compute_action`` one at a time;
- ``bare_torch_us``: a hand-written floor (one np.array call, from_numpy, the same net, Gumbel-max
  sampling, numpy out) with none of the policy's checks or conversions;
the ratios ``speedup_vs_per_item`` (higher is better) and ``overhead_vs_bare_torch`` (target <= 1.5x), and
``single_us`` / ``single_bare_us``: one ``compute_action`` against the bare floor for one observation.

    .venv/bin/python benchmarks/torch_policy_batch.py [--batch 256] [--rounds 300] [--threads 1]
"""

import argparse
import json
import time

import numpy as np
import torch

from maze_engine import FlattenConcatPolicyNet, GymMazeEnv, ProbabilisticPolicyComposer


def _median_us(function: object, rounds: int) -> float:
    samples = []
    for _ in range(rounds):
        start = time.perf_counter_ns()
        function()  # type: ignore[operator]
        samples.append(time.perf_counter_ns() - start)
    return float(np.median(samples)) / 1000.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=300)
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (0: torch default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    env = GymMazeEnv("CartPole-v1")
    torch.manual_seed(0)
    net = FlattenConcatPolicyNet({"observation": (4,)}, {"action": (2,)}, hidden_units=[64, 64],
                                 non_lin="torch.nn.Tanh")
    policy = ProbabilisticPolicyComposer(env.action_spaces_dict, env.observation_spaces_dict,
                                         networks=[net]).policy.eval()
    env.observation_space.seed(0)
    observations = [env.observation_space.sample() for _ in range(args.batch)]

    def batched() -> None:
        policy.compute_actions(observations)

    def per_item() -> None:
        for observation in observations:
            policy.compute_action(observation)

    def bare_torch() -> None:
        with torch.inference_mode():
            array = np.array([observation["observation"] for observation in observations], dtype=np.float32)
            logits = net({"observation": torch.from_numpy(array)})["action"]
            gumbel = -torch.log(-torch.log(torch.rand_like(logits)))
            actions = torch.argmax(logits + gumbel, dim=-1).numpy()
        [{"action": action} for action in actions]

    single_observation = observations[0]

    def single() -> None:
        policy.compute_action(single_observation)

    def single_bare() -> None:
        with torch.inference_mode():
            tensor = torch.from_numpy(np.asarray(single_observation["observation"], dtype=np.float32))
            logits = net({"observation": tensor.unsqueeze(0)})["action"]
            gumbel = -torch.log(-torch.log(torch.rand_like(logits)))
            {"action": torch.argmax(logits + gumbel, dim=-1).numpy()[0]}

    for function in (batched, per_item, bare_torch, single, single_bare):  # warm up
        function()
    batched_us = _median_us(batched, args.rounds)
    per_item_us = _median_us(per_item, max(args.rounds // 10, 5))
    bare_us = _median_us(bare_torch, args.rounds)
    single_us = _median_us(single, args.rounds)
    single_bare_us = _median_us(single_bare, args.rounds)
    print(json.dumps({
        "benchmark": "torch_policy_batch", "batch": args.batch, "torch_threads": torch.get_num_threads(),
        "batched_us": round(batched_us, 1), "per_item_us": round(per_item_us, 1),
        "bare_torch_us": round(bare_us, 1), "batched_us_per_observation": round(batched_us / args.batch, 3),
        "speedup_vs_per_item": round(per_item_us / batched_us, 1),
        "overhead_vs_bare_torch": round(batched_us / bare_us, 2),
        "single_us": round(single_us, 1), "single_bare_us": round(single_bare_us, 1),
        "single_overhead_vs_bare_torch": round(single_us / single_bare_us, 2),
    }))


if __name__ == "__main__":
    main()
