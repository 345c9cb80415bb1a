"""Behavioural cloning (algorithm=bc): learns a scripted CartPole controller from a Minari dataset recorded
with runner.record_minari, writes the run directory PPO writes (loadable with policy=torch_policy), resumes,
runs through RunContext and the worker's job path; datasets that cannot be used are refused naming them."""

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from maze_engine import ConfigError, GymMazeEnv, RunContext, SequentialRolloutRunner, load_torch_policy
from maze_engine.config import compose_config
from maze_engine.policies.policy import StructuredPolicy
from maze_engine.records.minari import MinariWriter
from maze_engine.rollout.launch import rollout_from_config
from maze_engine.rollout.runner import MINARI_DIR
from maze_engine.training.bc import BehaviouralCloning, Samples, split_episodes
from maze_engine.training.config import BCAlgorithmConfig
from maze_engine.training.evaluator import BestModelSelection
from maze_engine.training.launch import build_training, train_from_config
from maze_engine.training.summary import read_summary

QUICK = ["algorithm=bc", "algorithm.eval_repeats=2", "runner.n_eval_envs=2", "silent=true"]


class LeaningController(StructuredPolicy):
    """Pushes the cart the way the pole leans (its angle plus half its angular velocity): return 500."""

    def compute_action(self, observation: dict[str, Any], actor_id: Any = None,
                       deterministic: bool = False) -> dict[str, Any]:
        x = observation["observation"]
        return {"action": np.int64(x[2] + 0.5 * x[3] > 0)}


@pytest.fixture(scope="module")
def heuristic(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A Minari dataset of 10 episodes (5,000 steps) of the controller, recorded by a rollout."""
    output = tmp_path_factory.mktemp("rollout")
    runner = SequentialRolloutRunner(n_episodes=10, seed=0, silent=True, record_minari="cartpole/leaning-v0")
    stats = runner.run_with(env=GymMazeEnv("CartPole-v1"), wrappers=None, agent=LeaningController(),
                            output_dir=output)
    assert stats["episode_return"]["mean"] == 500
    return output / MINARI_DIR / "cartpole/leaning-v0"


def test_bc_reaches_the_controllers_return_and_the_run_directory_rolls_out(heuristic: Path,
                                                                           tmp_path: Path) -> None:
    started = time.perf_counter()
    summary = train_from_config(compose_config("conf_train", [*QUICK, f"dataset={heuristic}"]), tmp_path)
    seconds = time.perf_counter() - started
    assert summary.best_return is not None and summary.best_return >= 475, summary.format()
    assert seconds < 60
    for name in ("state_dict.pt", "spaces.json", "model.yaml", "stats.tsv", "summary.json", "checkpoint.pt",
                 "learning_curve.png", "config.yaml"):
        assert (tmp_path / name).is_file(), name
    assert list(tmp_path.glob("events.out.tfevents.*"))
    assert read_summary(tmp_path).best_return == summary.best_return and summary.total_env_steps == 0
    assert "training time" in summary.format()
    weights = torch.load(tmp_path / "state_dict.pt", weights_only=True)
    assert set(weights) == {"policy"}  # behavioural cloning trains no critic
    stats_rows = (tmp_path / "stats.tsv").read_text().splitlines()
    for metric in ("learner\tpolicy_loss", "validation\tpolicy_loss", "validation\taccuracy",
                   "eval\tepisode_return", "time\tsamples_per_second"):
        assert any(metric in row for row in stats_rows), metric
    assert not any("grad_norm" in row for row in stats_rows)  # no clipping, no norm

    rollout = rollout_from_config(compose_config("conf_rollout", [
        "policy=torch_policy", f"input_dir={tmp_path}", "runner=sequential", "runner.n_episodes=3",
        "runner.deterministic=true", "runner.record_trajectory=false", "runner.record_event_logs=false",
        "runner.silent=true", "seed=1"]), tmp_path / "rollout")
    assert rollout["episode_return"]["mean"] >= 475
    policy = load_torch_policy(tmp_path)
    observation = GymMazeEnv("CartPole-v1").reset()
    assert policy.compute_action(observation, deterministic=True)["action"] in (0, 1)


def test_ties_on_the_return_go_to_the_better_imitation() -> None:
    saved: list[int] = []
    selection = BestModelSelection(save=lambda: saved.append(len(saved)))
    for epoch, (score, tiebreak) in enumerate([(400, -0.5), (500, -0.4), (500, -0.3), (500, -0.35),
                                               (480, -0.1)]):
        selection.update(score, epoch, tiebreak)
    assert (selection.best_score, selection.best_epoch, selection.best_tiebreak) == (500, 2, -0.3)
    assert len(saved) == 3 and selection.epochs_without_improvement == 2
    restored = BestModelSelection()
    restored.load_state_dict(selection.state_dict())
    assert restored.best_tiebreak == -0.3 and not restored.update(500, 5, -0.3)


def test_split_holds_whole_episodes_out() -> None:
    lengths = np.array([5, 3, 4, 6, 2])
    train, validation = split_episodes(lengths, 0.4, seed=1)
    assert sorted([*train, *validation]) == list(range(20))
    starts = np.r_[0, np.cumsum(lengths)[:-1]]
    held = [index for index, (start, length) in enumerate(zip(starts, lengths, strict=True))
            if start in validation]
    assert len(held) == 2 and sum(lengths[held]) == len(validation)
    assert split_episodes(lengths, 0.4, seed=1)[1].tolist() == validation.tolist()  # the same draw
    assert split_episodes(lengths, 0.0)[1].size == 0
    train, validation = split_episodes(np.array([10]), 0.25)
    assert validation.tolist() == [7, 8, 9] and train.tolist() == list(range(7))


@pytest.mark.parametrize(("overrides", "fragment"), [
    (["dataset=stream:line7"], "dataset: 'stream:line7' names the experience stream of maze-worker"),
    (["dataset=cartpole/nowhere-v0"], "dataset: 'cartpole/nowhere-v0' is no path, and no Minari dataset"),
    ([], "dataset: algorithm=bc learns from a Minari dataset; expected dataset=<Minari id or path>"),
    (["env.name=Acrobot-v1", "dataset=HEURISTIC"],
     "dataset: the observation space of Minari dataset cartpole/leaning-v0 ("),
    (["algorithm=ppo", "dataset=HEURISTIC"], "dataset: only algorithm=bc learns from a dataset"),
    (["algorithm.validation_fraction=1.0", "dataset=HEURISTIC"],
     "algorithm.validation_fraction: expected a number in [0, 1), got 1.0"),
])
def test_datasets_that_cannot_be_used_are_refused_before_anything_is_written(
        heuristic: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, overrides: list[str],
        fragment: str) -> None:
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "datasets"))
    overrides = [override.replace("HEURISTIC", str(heuristic)) for override in overrides]
    with pytest.raises(ConfigError) as caught:
        build_training(compose_config("conf_train", [*QUICK, *overrides]), tmp_path / "run")
    assert fragment in str(caught.value)
    assert not (tmp_path / "run").exists()


def test_resume_continues_from_the_checkpoint(heuristic: Path, tmp_path: Path) -> None:
    overrides = [*QUICK, f"dataset={heuristic}", "algorithm.n_epochs=3", "algorithm.patience=0",
                 "algorithm.eval_repeats=1", "runner.n_eval_envs=1"]
    run = build_training(compose_config("conf_train", overrides), tmp_path)
    run.train(n_epochs=2)
    run.close()
    resumed = build_training(compose_config("conf_train", overrides), resume=tmp_path)
    assert resumed.trainer.epoch == 2
    resumed.train()
    resumed.close()
    assert resumed.summary is not None and resumed.summary.epochs == 3
    assert resumed.summary.resumed_at_epoch == 2


def test_continuous_actions_learn_by_the_gaussian_likelihood(tmp_path: Path) -> None:
    """Pendulum's Box action: the loss is the diagonal Gaussian's negative log-likelihood; no accuracy."""
    env = GymMazeEnv("Pendulum-v1")
    observation_space, action_space = env.observation_spaces_dict[0], env.action_spaces_dict[0]
    writer = MinariWriter(tmp_path / "pendulum/linear-v0" / "data", observation_space, action_space,
                          "pendulum/linear-v0")
    rng = np.random.default_rng(0)
    for _ in range(6):
        observations = rng.uniform(-1, 1, (51, 3)).astype(np.float32)
        actions = np.clip(observations[:-1, :1] * 1.5, -2, 2).astype(np.float32)  # a linear controller
        writer.add_episode({"observation": observations}, {"action": actions}, np.zeros(50),
                           np.zeros(50, bool), np.r_[np.zeros(49, bool), True])
    writer.close()
    run = build_training(compose_config("conf_train", [
        *QUICK, "env.name=Pendulum-v1", f"dataset={tmp_path / 'pendulum/linear-v0'}",
        "algorithm.eval_repeats=0", "algorithm.batch_size=32", "algorithm.lr=0.01", "algorithm.n_epochs=15",
        "algorithm.patience=0", "algorithm.max_grad_norm=10"]),
        tmp_path / "run")
    try:
        first = run.train(n_epochs=1)
        last = run.train(n_epochs=14)
    finally:
        run.close()
    assert "accuracy" not in last["validation"] and "eval" not in last
    assert last["learner"]["grad_norm"]["count"] == 8  # measured when it clips: 250 samples, batches of 32
    assert last["validation"]["policy_loss"]["mean"] < first["validation"]["policy_loss"]["mean"] - 1.0
    assert run.summary is not None and run.summary.selected_by == "validation_loss"
    assert run.summary.best_return is None and run.summary.best_loss is not None
    assert f"best loss       {run.summary.best_loss:.4g} (validation loss)" in run.summary.format()


def test_run_context_trains_behavioural_cloning(heuristic: Path, tmp_path: Path) -> None:
    config = BCAlgorithmConfig(n_epochs=1, eval_repeats=1, patience=0)
    with RunContext(env=lambda: GymMazeEnv("CartPole-v1"), algorithm=config, dataset=heuristic, silent=True,
                    run_dir=tmp_path) as rc:
        assert isinstance(rc.trainer, BehaviouralCloning)
        stats = rc.train()
        assert {"learner", "validation", "eval", "time"} <= set(stats)
        assert rc.compute_action(GymMazeEnv("CartPole-v1").reset(), deterministic=True)["action"] in (0, 1)
    with RunContext(algorithm="bc", overrides={"dataset": str(heuristic), "algorithm.n_epochs": 1},
                    silent=True, run_dir=tmp_path / "second") as rc:
        assert rc.train()["learner"]["policy_loss"]["count"] > 0


def test_the_worker_job_path_runs_behavioural_cloning(heuristic: Path, tmp_path: Path) -> None:
    """``maze-worker submit train algorithm=bc dataset=...``: the guard lets it through (the dataset inside
    the artifact root) and the job child trains it as maze-run would."""
    import shutil

    from worker.jobs.child import run_training
    from worker.jobs.codec import new_job
    from worker.jobs.guard import JobGuard

    root = tmp_path / "artifacts"
    shutil.copytree(heuristic, root / "datasets/leaning-v0")
    job = JobGuard(root).vet(new_job("bc-1", "train", ["algorithm=bc", "dataset=datasets/leaning-v0",
                                                       "algorithm.n_epochs=2", "algorithm.eval_repeats=1"]))
    assert f"dataset={root / 'datasets/leaning-v0'}" in job.overrides
    progress = tmp_path / "progress.jsonl"
    with progress.open("w", encoding="utf-8") as stream:
        summary = run_training(compose_config("conf_train", list(job.overrides)), tmp_path / "output", stream)
    assert summary["epochs"] == 2 and summary["selected_by"] == "eval"
    assert summary["best_eval_return"] is not None
    lines = [json.loads(line) for line in progress.read_text().splitlines()]
    assert [line["epoch"] for line in lines] == [1, 2] and "eval" in lines[0]["stats"]
    assert (tmp_path / "output" / "state_dict.pt").is_file()


def test_samples_refuse_nested_observations() -> None:
    from maze_engine.records.minari import StepData

    data = StepData({"nested": {"inner": np.zeros((2, 1))}}, {"action": np.zeros(2)}, np.array([2]), "x-v0")
    with pytest.raises(ConfigError, match="flat dicts of arrays as observations"):
        Samples.of(data, np.arange(2), torch.device("cpu"))
