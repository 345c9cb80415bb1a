"""A2C training throughput on CartPole-v1: env steps per second, ours against stable-baselines3 A2C.

Both use the seed-004 hyperparameters (n_rollout_steps 100, lr 0.0005, gamma 0.98, gae_lambda 1.0, value
loss 0.5, entropy 0.00025, no gradient clipping), Adam, 4 envs stepped in one process, and the same nets
(policy and critic: 256-256 Tanh MLPs, our ``vector_obs`` model and ``template_state`` critic). Evaluation is
off. Rounds alternate between the two (after a warm-up of each), and the median per side is reported.
Target: ratio >= 1.5. Needs the ``bench`` extra (``pip install stable-baselines3``).

    .venv/bin/python benchmarks/train_a2c_throughput.py [--updates 60] [--rounds 3]
"""

import argparse
import json
import statistics
import time

import torch

N_ENVS = 4
N_STEPS = 100
HIDDEN = [256, 256]


def ours(updates: int) -> float:
    """Env steps per second of our A2C (runner dev)."""
    from maze_engine.config import compose_config
    from maze_engine.training.launch import build_training

    cfg = compose_config("conf_train", [
        "algorithm=a2c", "model=vector_obs", "critic=template_state", "runner=dev", f"runner.n_envs={N_ENVS}",
        f"algorithm.n_rollout_steps={N_STEPS}", "algorithm.eval_repeats=0", "algorithm.patience=0",
        f"algorithm.epoch_length={updates}", "silent=true"])
    import tempfile

    with tempfile.TemporaryDirectory() as run_dir:
        run = build_training(cfg, run_dir=run_dir)
        try:
            run.trainer.train(n_epochs=1, stop_when=lambda trainer: trainer.n_updates >= 2)  # warm-up
            steps_before, started = run.trainer.total_env_steps, time.perf_counter()
            run.trainer.train(n_epochs=1)
            return (run.trainer.total_env_steps - steps_before) / (time.perf_counter() - started)
        finally:
            run.close()


def peer(updates: int) -> float:
    """Env steps per second of stable-baselines3 A2C with matching settings."""
    from stable_baselines3 import A2C
    from stable_baselines3.common.env_util import make_vec_env

    env = make_vec_env("CartPole-v1", n_envs=N_ENVS, seed=0)
    model = A2C("MlpPolicy", env, n_steps=N_STEPS, learning_rate=0.0005, gamma=0.98, gae_lambda=1.0,
                vf_coef=0.5, ent_coef=0.00025, max_grad_norm=1e9, use_rms_prop=False,
                normalize_advantage=False, seed=0, verbose=0, device="cpu",
                policy_kwargs={"net_arch": {"pi": HIDDEN, "vf": HIDDEN}, "activation_fn": torch.nn.Tanh})
    model.learn(total_timesteps=2 * N_ENVS * N_STEPS)  # warm-up
    started = time.perf_counter()
    model.learn(total_timesteps=updates * N_ENVS * N_STEPS, reset_num_timesteps=False)
    seconds = time.perf_counter() - started
    env.close()
    return updates * N_ENVS * N_STEPS / seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--updates", type=int, default=60, help="updates timed per round (400 steps each)")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    ours_rates, peer_rates = [], []
    for _ in range(args.rounds):
        ours_rates.append(ours(args.updates))
        peer_rates.append(peer(args.updates))
    ours_median, peer_median = statistics.median(ours_rates), statistics.median(peer_rates)
    print(json.dumps({
        "benchmark": "train_a2c_throughput", "env": "CartPole-v1", "n_envs": N_ENVS,
        "n_rollout_steps": N_STEPS, "updates_per_round": args.updates, "rounds": args.rounds,
        "ours_steps_per_s": round(ours_median), "sb3_steps_per_s": round(peer_median),
        "ours_rounds": [round(rate) for rate in ours_rates],
        "sb3_rounds": [round(rate) for rate in peer_rates],
        "ratio": round(ours_median / peer_median, 3), "target_ratio": 1.5,
        "meets_target": ours_median / peer_median >= 1.5, "torch_threads": torch.get_num_threads()}))


if __name__ == "__main__":
    main()
