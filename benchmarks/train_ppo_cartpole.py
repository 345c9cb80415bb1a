"""Wall time to solve CartPole-v1 with PPO, ours against stable-baselines3 with the RL-Zoo CartPole settings.

"Solved": the mean return of the last 20 finished training episodes reaches 475. The clock runs from the
start of training (models and envs built, torch warmed up) until then. Each side runs the same seeds; the
median over seeds is reported. The peer uses RL-Zoo's settings: 8 envs, n_steps 32, batch 256,
gae_lambda 0.8, gamma 0.98, 20 epochs, linear learning rate from 1e-3, clip 0.2, no entropy bonus, its
default 64-64 Tanh nets. Ours uses the project's best PPO settings (``OUR_SETTINGS`` below), with the same
64-64 Tanh policy and critic. Target: ratio (ours / peer) <= 1.0. Needs the ``bench`` extra
(``pip install stable-baselines3``).

    .venv/bin/python benchmarks/train_ppo_cartpole.py [--seeds 0 1 2] [--max-steps 300000]
"""

import argparse
import json
import statistics
import tempfile
import time

import numpy as np
import torch

SOLVED_RETURN = 475.0
WINDOW = 20

OUR_SETTINGS = [
    "algorithm=ppo", "runner=dev", "runner.n_envs=8", "algorithm.n_rollout_steps=32",
    "algorithm.batch_size=256",
    "algorithm.n_optimization_epochs=10", "algorithm.lr=0.002", "algorithm.lr_schedule=linear",
    "algorithm.gamma=0.98", "algorithm.gae_lambda=0.8", "algorithm.clip_range=0.2",
    "algorithm.entropy_coef=0.0",
    "algorithm.max_grad_norm=0.5", "algorithm.eval_repeats=0", "algorithm.patience=0", "model=flatten_concat",
    "model.critic.networks.0.hidden_units=[64,64]", "silent=true"]


def _solved(returns: list[float]) -> bool:
    return len(returns) >= WINDOW and float(np.mean(returns[-WINDOW:])) >= SOLVED_RETURN


def ours(seed: int, max_steps: int) -> tuple[float, int]:
    """Seconds and env steps our PPO needs to solve CartPole-v1."""
    from maze_engine.config import compose_config
    from maze_engine.training.launch import build_training

    updates = max_steps // (8 * 32)
    cfg = compose_config("conf_train", [*OUR_SETTINGS, "algorithm.n_epochs=1",
                                        f"algorithm.epoch_length={updates}",
                                        f"seeding.env_base_seed={seed}", f"seeding.agent_base_seed={seed}"])
    with tempfile.TemporaryDirectory() as run_dir:
        run = build_training(cfg, run_dir=run_dir)
        try:
            started = time.perf_counter()
            run.trainer.train(stop_when=lambda trainer: _solved(list(trainer.recent_returns)))
            seconds = time.perf_counter() - started
            solved = _solved(list(run.trainer.recent_returns))
            return (seconds if solved else float("inf")), run.trainer.total_env_steps
        finally:
            run.close()


def peer(seed: int, max_steps: int) -> tuple[float, int]:
    """Seconds and env steps stable-baselines3 PPO (RL-Zoo settings) needs to solve CartPole-v1."""
    from stable_baselines3 import PPO
    from stable_baselines3.common.callbacks import BaseCallback
    from stable_baselines3.common.env_util import make_vec_env

    class StopWhenSolved(BaseCallback):
        def __init__(self) -> None:
            super().__init__()
            self.solved = False

        def _on_step(self) -> bool:
            return not self.solved

        def _on_rollout_end(self) -> None:
            returns = [info["r"] for info in self.model.ep_info_buffer]
            self.solved = _solved(returns)

    env = make_vec_env("CartPole-v1", n_envs=8, seed=seed)
    model = PPO("MlpPolicy", env, n_steps=32, batch_size=256, gae_lambda=0.8, gamma=0.98, n_epochs=20,
                ent_coef=0.0, learning_rate=lambda progress: 1e-3 * progress, clip_range=0.2, seed=seed,
                verbose=0, device="cpu")
    callback = StopWhenSolved()
    started = time.perf_counter()
    model.learn(total_timesteps=max_steps, callback=callback)
    seconds = time.perf_counter() - started
    env.close()
    return (seconds if callback.solved else float("inf")), int(model.num_timesteps)


def _warm_up() -> None:
    """Pay torch's one-time costs (the optimizer's lazy imports) before any clock runs."""
    parameter = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.Adam([parameter])
    parameter.sum().backward()
    optimizer.step()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--max-steps", type=int, default=300_000, help="give up (time = inf) after this")
    args = parser.parse_args()
    _warm_up()
    ours_runs, peer_runs = [], []
    for seed in args.seeds:
        ours_runs.append(ours(seed, args.max_steps))
        peer_runs.append(peer(seed, args.max_steps))
    ours_median = statistics.median(seconds for seconds, _ in ours_runs)
    peer_median = statistics.median(seconds for seconds, _ in peer_runs)
    ratio = ours_median / peer_median
    print(json.dumps({
        "benchmark": "train_ppo_cartpole", "env": "CartPole-v1",
        "solved": f"mean of last {WINDOW} returns >= "
        f"{SOLVED_RETURN}", "seeds": args.seeds,
        "ours_median_s": round(ours_median, 2), "sb3_median_s": round(peer_median, 2),
        "ours_runs": [{"seconds": round(s, 2), "steps": n} for s, n in ours_runs],
        "sb3_runs": [{"seconds": round(s, 2), "steps": n} for s, n in peer_runs],
        "ratio": round(ratio, 3), "target_ratio": 1.0, "meets_target": ratio <= 1.0,
        "our_settings": OUR_SETTINGS, "torch_threads": torch.get_num_threads()}))


if __name__ == "__main__":
    main()
