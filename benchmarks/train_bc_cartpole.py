"""Behavioural cloning on CartPole-v1 from 50,000 steps of a PPO expert: how long our BC takes to reach 95% of
the expert's mean return, against a bare PyTorch supervised loop on the same tensors (the floor; target: ours
at most 1.5x its time) and d3rlpy's DiscreteBC 2.8 (the peer, in a venv of its own; target: ours at least 2x
faster), all in the same run. Prints one JSON line.

    .venv/bin/python benchmarks/train_bc_cartpole.py [--seeds 5] [--no-peer]

1. The expert: ``maze-run -cn conf_train algorithm=ppo`` with its defaults, trained on (resumed with more
   epochs) until the mean return of its recorded episodes is at least 475.
2. Its episodes (sampled actions) recorded with ``runner.record_minari``, topped up and cut to 50,000 steps.
3. The same training split for everyone (90% of the episodes, ``split_episodes``); each contestant trains
   epoch by epoch (one pass over the split in mini-batches of 256, Adam at 1e-3, the 64-64 tanh net of
   ``model=flatten_concat``; the bare loop starts from our initial weights) and after each epoch its greedy
   policy plays 10 CartPole-v1 episodes (seeds 0-9, not timed). Time to target: the training time until the
   first of those evaluations at 95% of the expert's mean return; the median over seeds is compared. Each
   time is taken twice: wall-clock and CPU time of the training process (``time.process_time``, all its
   threads). Everyone trains on one torch thread; on a shared machine the CPU time is the steadier of the
   two (wall-clock also counts the time other processes held the cores), so the ratios use it and the
   wall-clock ones are reported beside them.

Ours is ``maze-run -cn conf_train algorithm=bc dataset=...`` as built by ``build_training``, trained by one
``run.train()`` whose ``after_epoch`` hook evaluates: an epoch's time runs from the end of the previous
hook to the start of the next, so it holds the per-epoch validation pass, checkpoint, statistics and
TensorBoard files; ``algorithm.eval_repeats=0`` keeps its own evaluation out of the clock like everyone's.
The peer's venv is built on first use under ``$MAZE_BENCH_CACHE`` (default ``~/.cache/maze-bench``); when it
cannot be built the JSON line says why under ``peer.skipped``.
"""

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
import torch.nn.functional as F

from maze_engine.config import compose_config
from maze_engine.records.minari import MinariWriter, open_dataset
from maze_engine.rollout.launch import rollout_from_config
from maze_engine.rollout.runner import MINARI_DIR
from maze_engine.training.bc import split_episodes
from maze_engine.training.launch import build_training, train_from_config

STEPS = 50_000
EXPERT_RETURN = 475.0
SHARE = 0.95
BATCH, LR, MAX_EPOCHS, EVAL_EPISODES = 256, 1e-3, 30, 10
DATASET = "cartpole/ppo-expert-v0"
PEER = "d3rlpy==2.8.1"
PEER_SCRIPT = Path(__file__).parent / "peers" / "d3rlpy_bc.py"


# ------------------------------------------------------------------------------------------------ expert
def train_expert(directory: Path) -> tuple[Path, float, int, float]:
    """PPO with its defaults until the recorded mean return is >= 475; the dataset, its mean return, epochs
    and PPO's training seconds."""
    run_dir, n_epochs, seconds = directory / "expert", 20, 0.0
    summary = train_from_config(compose_config("conf_train", ["algorithm=ppo", "silent=true"]), run_dir)
    for attempt in range(4):
        seconds = summary.seconds
        recorded = directory / f"rollout-{attempt}"
        stats = rollout_from_config(compose_config("conf_rollout", [
            "policy=torch_policy", f"input_dir={run_dir}", "runner.n_episodes=100", "runner.n_processes=2",
            f"runner.record_minari={DATASET}", "runner.record_trajectory=false",
            "runner.record_event_logs=false", "runner.silent=true", f"seed={attempt}"]), recorded)
        if stats["episode_return"]["mean"] >= EXPERT_RETURN:
            return recorded / MINARI_DIR / DATASET, float(stats["episode_return"]["mean"]), n_epochs, seconds
        n_epochs += 20  # train on: resume the run with more epochs
        run = build_training(compose_config("conf_train", ["algorithm=ppo", "silent=true",
                                                           f"algorithm.n_epochs={n_epochs}"]), resume=run_dir)
        try:
            run.train()
        finally:
            run.close()
        assert run.summary is not None
        summary = run.summary
    raise SystemExit(f"the PPO expert did not reach a mean return of {EXPERT_RETURN} in {n_epochs} epochs")


def cut_to_steps(source: Path, target: Path, expert: Path, steps: int) -> tuple[int, int]:
    """Write the first ``steps`` steps of ``source`` (topped up with more expert episodes when it has fewer)
    as a dataset at ``target``; returns (steps, episodes)."""
    dataset = open_dataset(source)
    episodes = list(dataset.iterate_episodes())
    seed = 100
    while sum(len(episode) for episode in episodes) < steps:
        extra = target.parent / f"extra-{seed}"
        rollout_from_config(compose_config("conf_rollout", [
            "policy=torch_policy", f"input_dir={expert}", "runner=sequential", "runner.n_episodes=10",
            f"runner.record_minari={DATASET}", "runner.record_trajectory=false",
            "runner.record_event_logs=false", "runner.silent=true", f"seed={seed}"]), extra)
        episodes += list(open_dataset(extra / MINARI_DIR / DATASET).iterate_episodes())
        seed += 1
    writer = MinariWriter(target / DATASET / "data", dataset.observation_space, dataset.action_space, DATASET)
    left, count = steps, 0
    for episode in episodes:
        if left <= 0:
            break
        n = min(len(episode), left)
        truncations = np.asarray(episode.truncations[:n]).copy()
        if n < len(episode):
            truncations[-1] = True  # cut at the budget
        writer.add_episode({"observation": episode.observations["observation"][:n + 1]},
                           {"action": episode.actions["action"][:n]}, episode.rewards[:n],
                           episode.terminations[:n], truncations)
        left, count = left - n, count + 1
    writer.close()
    return steps, count


# --------------------------------------------------------------------------------------------- evaluation
def evaluate(act: Any) -> float:
    """Mean return of ``act`` (observation array -> action) over CartPole-v1 seeds 0-9."""
    env = gym.make("CartPole-v1")
    returns = []
    for seed in range(EVAL_EPISODES):
        observation, _ = env.reset(seed=seed)
        done, total = False, 0.0
        while not done:
            observation, reward, terminated, truncated, _ = env.step(act(observation))
            total += float(reward)
            done = terminated or truncated
        returns.append(total)
    return float(np.mean(returns))


def now() -> tuple[float, float]:
    """Wall-clock and CPU time of this process."""
    return time.perf_counter(), time.process_time()


def outcome(epoch_seconds: list[tuple[float, float]], returns: list[float], target: float) -> dict[str, Any]:
    done = bool(returns) and returns[-1] >= target
    return {"seconds_to_target": sum(wall for wall, _ in epoch_seconds) if done else None,
            "cpu_seconds_to_target": sum(cpu for _, cpu in epoch_seconds) if done else None,
            "epochs_to_target": len(returns) if done else None,
            "epoch_seconds": [wall for wall, _ in epoch_seconds],
            "epoch_cpu_seconds": [cpu for _, cpu in epoch_seconds], "returns": returns}


def until_target(train_epoch: Any, act: Any, target: float) -> dict[str, Any]:
    """Train epoch by epoch (timed) and evaluate after each (not timed) until ``target``."""
    epoch_seconds: list[tuple[float, float]] = []
    returns: list[float] = []
    for _ in range(MAX_EPOCHS):
        wall, cpu = now()
        train_epoch()
        epoch_seconds.append((time.perf_counter() - wall, time.process_time() - cpu))
        returns.append(evaluate(act))
        if returns[-1] >= target:
            break
    return outcome(epoch_seconds, returns, target)


# ------------------------------------------------------------------------------------------- contestants
def build_ours(dataset: Path, seed: int, run_dir: Path) -> tuple[Any, float]:
    """Our BC run as ``maze-run -cn conf_train algorithm=bc dataset=...`` builds it, and the seconds that took
    (reading the Minari dataset into tensors, the nets, the run directory's first files)."""
    started = time.perf_counter()
    run = build_training(compose_config("conf_train", [
        "algorithm=bc", f"dataset={dataset}", "algorithm.eval_repeats=0", f"algorithm.batch_size={BATCH}",
        f"algorithm.lr={LR}", f"algorithm.n_epochs={MAX_EPOCHS}", "algorithm.patience=0", "silent=true",
        f"seeding.agent_base_seed={seed}"]), run_dir)
    return run, time.perf_counter() - started


def ours(run: Any, target: float) -> dict[str, Any]:
    policy = run.policy
    epoch_seconds: list[tuple[float, float]] = []
    returns: list[float] = []
    mark = [now()]

    def after_epoch(trainer: Any) -> None:
        if reached(trainer):  # the epoch stop_when cut short after the target was reached
            return
        epoch_seconds.append((time.perf_counter() - mark[0][0], time.process_time() - mark[0][1]))
        returns.append(evaluate(lambda x: int(policy.compute_action({"observation": x},
                                                                    deterministic=True)["action"])))
        mark[0] = now()

    def reached(trainer: Any) -> bool:
        return bool(returns) and returns[-1] >= target

    try:
        mark[0] = now()
        run.train(after_epoch=after_epoch, stop_when=reached)
    finally:
        run.close()
    return outcome(epoch_seconds, returns, target)


def bare_torch(samples: Any, initial: dict[str, torch.Tensor], seed: int, target: float) -> dict[str, Any]:
    """The floor: a plain supervised loop on our training tensors, from our initial weights."""
    torch.manual_seed(seed)
    observations, actions = samples.observations["observation"], samples.actions["action"]
    net = torch.nn.Sequential(torch.nn.Linear(4, 64), torch.nn.Tanh(), torch.nn.Linear(64, 64),
                              torch.nn.Tanh(), torch.nn.Linear(64, 2))
    net.load_state_dict(dict(zip(net.state_dict(), initial.values(), strict=True)))
    optimizer = torch.optim.Adam(net.parameters(), lr=LR, fused=True)

    def train_epoch() -> None:
        order = torch.randperm(len(actions))
        for start in range(0, len(actions), BATCH):
            index = order[start:start + BATCH]
            loss = F.cross_entropy(net(observations[index]), actions[index])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()

    def act(x: np.ndarray) -> int:
        with torch.inference_mode():
            return int(net(torch.as_tensor(x, dtype=torch.float32)).argmax())

    return until_target(train_epoch, act, target)


def peer_python() -> tuple[Path | None, str | None]:
    """The peer venv's python, built on first use; (None, why) when it cannot be."""
    root = Path(os.environ.get("MAZE_BENCH_CACHE", Path.home() / ".cache" / "maze-bench")) / "d3rlpy-2.8"
    python = root / "bin" / "python"
    check = [str(python), "-c", "import d3rlpy, gymnasium, torch"]
    if python.exists() and subprocess.run(check, capture_output=True).returncode == 0:
        return python, None
    try:
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(root)], check=True, capture_output=True,
                       text=True)
        # torch's CPU build, as ours: the default wheel pulls several GB of CUDA libraries.
        subprocess.run([str(python), "-m", "pip", "install", "-q", f"torch=={torch.__version__}", PEER],
                       check=True, capture_output=True, text=True, timeout=1800)
        subprocess.run(check, check=True, capture_output=True)
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired, OSError) as err:
        detail = getattr(err, "stderr", "") or str(err)
        lines = [line for line in str(detail).splitlines() if line.strip()]
        return None, f"could not build the {PEER} venv in {root}: {lines[-1] if lines else err}"
    return python, None


def peer(python: Path, samples: Any, lengths: np.ndarray, seed: int, target: float,
         directory: Path) -> dict[str, Any]:
    directory.mkdir(parents=True, exist_ok=True)
    data = directory / "train.npz"
    if not data.exists():
        np.savez(data, observations=samples.observations["observation"].numpy(),
                 actions=samples.actions["action"].numpy(), episode_lengths=lengths)
    steps_per_epoch = math.ceil(len(samples.actions["action"]) / BATCH)
    done = subprocess.run([str(python), str(PEER_SCRIPT), "--data", str(data), "--seed", str(seed),
                           "--target", str(target), "--max-epochs", str(MAX_EPOCHS), "--steps-per-epoch",
                           str(steps_per_epoch), "--batch-size", str(BATCH), "--lr", str(LR),
                           "--eval-episodes", str(EVAL_EPISODES)], capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"the peer failed: {done.stderr.strip().splitlines()[-1:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def median_of(results: list[dict[str, Any]], key: str) -> float | None:
    times = [result[key] for result in results]
    return round(statistics.median(times), 4) if all(value is not None for value in times) else None


def summary(results: list[dict[str, Any]]) -> dict[str, Any]:
    return {"cpu_seconds_to_target": median_of(results, "cpu_seconds_to_target"),
            "seconds_to_target": median_of(results, "seconds_to_target"),
            "per_seed_cpu_seconds": [None if r["cpu_seconds_to_target"] is None
                                     else round(r["cpu_seconds_to_target"], 3) for r in results],
            "per_seed_seconds": [None if r["seconds_to_target"] is None else round(r["seconds_to_target"], 3)
                                 for r in results],
            "epochs_to_target": [r["epochs_to_target"] for r in results],
            "median_epoch_cpu_seconds": round(statistics.median(seconds for r in results
                                                                for seconds in r["epoch_cpu_seconds"]), 4),
            "returns": [r["returns"] for r in results]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--no-peer", action="store_true", help="leave the peer out")
    args = parser.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory(prefix="bench-bc-") as temporary:
        directory = Path(temporary)
        started = time.perf_counter()
        recorded, expert_return, expert_epochs, ppo_seconds = train_expert(directory)
        steps, episodes = cut_to_steps(recorded, directory / "datasets", directory / "expert", STEPS)
        dataset = directory / "datasets" / DATASET
        prepare_seconds = time.perf_counter() - started
        target = SHARE * expert_return
        python, skipped = (None, "--no-peer") if args.no_peer else peer_python()
        lengths = np.asarray([len(episode) for episode in open_dataset(dataset).iterate_episodes()])
        results: dict[str, list[dict[str, Any]]] = {"ours": [], "bare_torch": [], "peer": []}
        build_seconds = []
        # Warm-up, not counted: torch's first updates pay one-time costs that whoever went first would bear.
        warm_up, _ = build_ours(dataset, 0, directory / "warm-up")
        ours(warm_up, 0.0)  # one epoch
        for seed in range(args.seeds):
            run, seconds = build_ours(dataset, seed, directory / f"bc-{seed}")
            build_seconds.append(seconds)
            samples = run.trainer.train_samples
            initial = {key: value.clone() for key, value in run.policy.state_dict().items()}
            if seed % 2:  # who goes first alternates
                results["bare_torch"].append(bare_torch(samples, initial, seed, target))
                results["ours"].append(ours(run, target))
            else:
                results["ours"].append(ours(run, target))
                results["bare_torch"].append(bare_torch(samples, initial, seed, target))
            if python is not None:
                train_index, _ = split_episodes(lengths, 0.1, seed)  # the split our BC drew
                starts = np.r_[0, np.cumsum(lengths)[:-1]]
                train_lengths = lengths[np.isin(starts, train_index)]
                assert train_lengths.sum() == len(samples.actions["action"])
                try:
                    results["peer"].append(peer(python, samples, train_lengths, seed, target,
                                                directory / f"peer-{seed}"))
                except RuntimeError as err:
                    python, skipped = None, str(err)
                    results["peer"] = []
    line: dict[str, Any] = {
        "benchmark": "train_bc_cartpole", "env": "CartPole-v1", "torch_threads": 1,
        "expert": {"mean_return": expert_return, "ppo_epochs": expert_epochs,
                   "ppo_seconds": round(ppo_seconds, 2)},
        "dataset": {"steps": steps, "episodes": episodes,
                    "train_samples": int(len(samples.actions["action"])),
                    "prepare_seconds": round(prepare_seconds, 1)},
        "target_return": target, "seeds": args.seeds, "batch_size": BATCH, "lr": LR,
        "ours": {**summary(results["ours"]), "build_seconds": round(statistics.median(build_seconds), 3)},
        "bare_torch": summary(results["bare_torch"]),
    }
    line["peer"] = ({"name": f"d3rlpy DiscreteBC ({PEER})", **summary(results["peer"])} if results["peer"]
                    else {"name": f"d3rlpy DiscreteBC ({PEER})", "skipped": skipped})
    for suffix, key in (("", "cpu_seconds_to_target"), ("_wall", "seconds_to_target")):
        ours_s, bare_s, peer_s = (line[name].get(key) for name in ("ours", "bare_torch", "peer"))
        line[f"ratio_ours_vs_bare{suffix}"] = round(ours_s / bare_s, 3) if ours_s and bare_s else None
        line[f"ratio_peer_vs_ours{suffix}"] = round(peer_s / ours_s, 3) if ours_s and peer_s else None
    line["targets"] = {"ratio_ours_vs_bare": "<= 1.5", "ratio_peer_vs_ours": ">= 2"}
    print(json.dumps(line))


if __name__ == "__main__":
    main()
