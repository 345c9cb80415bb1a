"""Off-policy evaluation on CartPole-v1: estimates of target policies from episodes another policy logged,
against their true returns measured by rollouts in the same run.

One PPO run trains a policy (``trained``: the last 20 training returns average >= 475); a copy taken when
they first average >= 100 is the ``half_trained`` policy. The behaviour policy that logs ``--episodes``
episodes (with its log-probabilities) is epsilon-soft around the trained one: with probability
``--behaviour-epsilon`` a uniformly random action, else the trained policy's. The targets, of clearly
different quality, are the trained policy itself, a degraded release of it (``--degraded-epsilon`` of its
actions uniformly random) and a uniformly random policy. Each is estimated by weighted importance sampling
(``wis``) and doubly robust (``dr``, with fitted Q evaluation), and rolled out ``--truth-episodes`` times for
its true discounted return. Target: every estimate within 10% of the truth and both estimators ranking the
targets correctly.

Why epsilon-soft, and ``gamma`` 0.98 (the default: the discount PPO trains with; episodes still run up to
500 steps): per-decision importance weights multiply one ratio per step, so a target that differs from the
behaviour on most of 500 steps leaves a handful of episodes carrying all the weight (an effective sample
size near 1), and the late steps of the trained policy's 500-step episodes are then estimated from one or
two episodes. Discounting makes those late steps count less. The half-trained PPO policy is a target
far from the behaviour (another net, which disagrees with the trained one in many states): it is estimated
and reported too (``hard``), outside the target criterion, as are the ``wis`` estimates at gamma 1.0
(``undiscounted``).

    .venv/bin/python benchmarks/ope_cartpole.py [--episodes 10000] [--gamma 0.98] [--seed 0]
"""

import argparse
import copy
import json
import tempfile
import time
from collections.abc import Callable, Mapping
from typing import Any

import gymnasium as gym
import numpy as np
import torch

from maze_engine import RunContext
from maze_engine.evaluation import FQEConfig, LoggedEpisodes, TorchCandidate, evaluate_off_policy

ENV = "CartPole-v1"
ACTIONS = gym.spaces.Dict({"action": gym.spaces.Discrete(2)})
Probabilities = Callable[[np.ndarray], np.ndarray]


class EpsilonSoft:
    """A policy that takes a uniformly random action with probability ``epsilon``, else ``base``'s action."""

    action_spaces_dict = {0: ACTIONS}

    def __init__(self, base: Any, epsilon: float) -> None:
        self.base = TorchCandidate(base) if base is not None else None
        self.epsilon = epsilon

    def probabilities(self, observations: np.ndarray) -> np.ndarray:
        """``(n, 2)``: the probability of each action in each observation."""
        uniform = np.full((len(observations), 2), 0.5)
        if self.base is None or self.epsilon >= 1.0:
            return uniform
        obs = {"observation": observations}
        base = np.stack([np.exp(self.base.log_probs(obs, {"action": np.full(len(observations), action)}))
                         for action in (0, 1)], axis=1)
        return (1.0 - self.epsilon) * base + self.epsilon * uniform

    def log_probs(self, observations: Mapping[str, Any], actions: Mapping[str, Any]) -> np.ndarray:
        probabilities = self.probabilities(np.asarray(observations["observation"]))
        return np.log(probabilities[np.arange(len(probabilities)), np.asarray(actions["action"])])


def train(seed: int, run_dir: str) -> tuple[Any, Any, int]:
    """The trained PPO policy, the half-trained copy, and the env steps trained."""
    snapshots: dict[str, Any] = {}

    def stop(trainer: Any) -> bool:
        recent = list(trainer.recent_returns)[-20:]
        mean = float(np.mean(recent)) if len(recent) == 20 else 0.0
        if mean >= 100 and "half" not in snapshots:
            snapshots["half"] = copy.deepcopy(trainer.policy).eval()
        return mean >= 475

    context = RunContext(env="gym_env", algorithm="ppo", silent=True, run_dir=run_dir, overrides={
        "env.name": ENV, "algorithm.n_epochs": 1, "algorithm.epoch_length": 400, "algorithm.eval_repeats": 0,
        "algorithm.patience": 0, "seeding.env_base_seed": seed, "seeding.agent_base_seed": seed})
    context.train(stop_when=stop)
    trained = copy.deepcopy(context.policy).eval()
    steps = int(context.trainer.total_env_steps)
    context.close()
    return trained, snapshots.get("half", trained), steps


def roll_out(probabilities: Probabilities, episodes: int, seed: int) -> dict[str, np.ndarray]:
    """``episodes`` CartPole-v1 episodes (all at once, gymnasium's vectorized CartPole), padded."""
    env = gym.make_vec(ENV, num_envs=episodes, vectorization_mode="vector_entry_point")
    observation, _ = env.reset(seed=seed)
    rng = np.random.default_rng(seed)
    alive = np.ones(episodes, dtype=bool)
    steps: dict[str, list[np.ndarray]] = {"observation": [], "action": [], "probability": [], "reward": [],
                                          "alive": []}
    while alive.any():
        probability = probabilities(observation)
        action = (rng.random(episodes) < probability[:, 1]).astype(np.int64)
        steps["observation"].append(observation.astype(np.float32))
        steps["action"].append(action)
        steps["probability"].append(probability[np.arange(episodes), action])
        steps["alive"].append(alive.copy())
        observation, reward, terminated, truncated, _ = env.step(action)
        steps["reward"].append(np.where(alive, reward, 0.0))
        alive &= ~(terminated | truncated)
    env.close()
    return {key: np.stack(value, axis=1) for key, value in steps.items()}


def discounted(rollout: Mapping[str, np.ndarray], gamma: float) -> float:
    return float((rollout["reward"] * gamma ** np.arange(rollout["reward"].shape[1])).sum(axis=1).mean())


def logged(rollout: Mapping[str, np.ndarray]) -> LoggedEpisodes:
    alive = rollout["alive"]
    return LoggedEpisodes(observations={"observation": rollout["observation"][alive]},
                          actions={"action": rollout["action"][alive]},
                          behaviour_log_probs=np.log(rollout["probability"][alive]),
                          rewards=rollout["reward"][alive], lengths=alive.sum(axis=1), name="CartPole logs")


def estimate(data: LoggedEpisodes, target: EpsilonSoft, truth: float, args: argparse.Namespace,
             methods: tuple[str, ...] = ("wis", "dr"), gamma: float | None = None) -> dict[str, Any]:
    result = evaluate_off_policy(data, target, gamma=args.gamma if gamma is None else gamma, methods=methods,
                                 bootstrap=args.bootstrap, seed=args.seed,
                                 fqe=FQEConfig(steps=args.fqe_steps, seed=args.seed))
    report: dict[str, Any] = {"truth": round(truth, 3)}
    for name, found in result.estimates.items():
        report[name] = {"value": round(found.value, 3), "low": round(found.low, 3),
                        "high": round(found.high, 3), "ess": round(found.ess, 1),
                        "error": round(found.value / truth - 1.0, 4),
                        "covers": found.low <= truth <= found.high}
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--episodes", type=int, default=10_000, help="logged episodes")
    parser.add_argument("--truth-episodes", type=int, default=2_000, help="rollouts per target for its truth")
    parser.add_argument("--behaviour-epsilon", type=float, default=0.5)
    parser.add_argument("--degraded-epsilon", type=float, default=0.7)
    parser.add_argument("--gamma", type=float, default=0.98)
    parser.add_argument("--bootstrap", type=int, default=200)
    parser.add_argument("--fqe-steps", type=int, default=10_000, help="gradient steps per cross-fitting fold")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(1)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as run_dir:
        trained, half_trained, train_steps = train(args.seed, run_dir)
    trained_at = time.perf_counter()
    behaviour = EpsilonSoft(trained, args.behaviour_epsilon)
    logs = roll_out(behaviour.probabilities, args.episodes, seed=args.seed + 1)
    data = logged(logs)
    targets = {"trained": EpsilonSoft(trained, 0.0), "degraded": EpsilonSoft(trained, args.degraded_epsilon),
               "random": EpsilonSoft(None, 1.0)}
    hard = {"half_trained": EpsilonSoft(half_trained, 0.0)}
    truths = {name: roll_out(target.probabilities, args.truth_episodes, seed=args.seed + 2 + index)
              for index, (name, target) in enumerate({**targets, **hard}.items())}
    logged_at = time.perf_counter()
    reports = {name: estimate(data, target, discounted(truths[name], args.gamma), args)
               for name, target in {**targets, **hard}.items()}
    undiscounted = {name: estimate(data, target, discounted(truths[name], 1.0), args, ("wis",), 1.0)
                    for name, target in targets.items()}
    true_order = sorted(targets, key=lambda name: reports[name]["truth"])
    summary = {method: {"max_abs_error": max(abs(reports[name][method]["error"]) for name in targets),
                        "ranking_correct": sorted(targets, key=lambda name: reports[name][method]["value"])
                        == true_order} for method in ("wis", "dr")}
    passed = all(entry["max_abs_error"] <= 0.10 and entry["ranking_correct"] for entry in summary.values())
    print(json.dumps({
        "benchmark": "ope_cartpole", "env": ENV, "gamma": args.gamma, "episodes": data.n_episodes,
        "steps": data.n_steps, "behaviour": {"epsilon": args.behaviour_epsilon,
                                            "return": round(discounted(logs, args.gamma), 3),
                                            "undiscounted_return": round(discounted(logs, 1.0), 1)},
        "targets": {name: {**reports[name], "undiscounted_truth": round(discounted(truths[name], 1.0), 1)}
                    for name in targets},
        "hard": {name: reports[name] for name in hard},
        "undiscounted": undiscounted, "summary": summary,
        "passed": passed, "train_env_steps": train_steps,
        "seconds": {"train": round(trained_at - started, 1),
                    "log_and_truth": round(logged_at - trained_at, 1),
                    "estimate": round(time.perf_counter() - logged_at, 1),
                    "total": round(time.perf_counter() - started, 1)}}))


if __name__ == "__main__":
    main()
