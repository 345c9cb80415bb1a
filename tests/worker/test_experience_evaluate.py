"""``maze-worker experience evaluate``: a run directory or a published version evaluated on a Minari dataset
written as ``maze-worker experience export`` writes them (end to end), the table and the JSON line, and the
refusals of data without propensities; recorded episodes read with the export's propensity rules, and from
the experience stream itself (against RabbitMQ)."""

import json
import math
import re
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium import spaces

from maze_engine import GymMazeEnv
from maze_engine.perception.composers.model import build_model_composers
from maze_engine.policies.torch_io import save_torch_policy
from maze_engine.records.minari import MinariWriter
from worker.broker.stream import StreamPublisher, stream_arguments
from worker.experience.evaluate import evaluate_command, from_recorded
from worker.experience.reader import RecordedEpisode
from worker.experience.record import ExperienceRecord, encode_record
from worker.policy_store.store import publish_policy
from worker.settings import BrokerSettings
from worker.wire import topology

MAZE_WORKER = str(Path(sys.executable).parent / "maze-worker")
OBSERVATIONS = spaces.Dict({"observation": gym.make("CartPole-v1").observation_space})
ACTIONS = spaces.Dict({"action": spaces.Discrete(2)})
FAST = ["--bootstrap", "50", "--fqe-steps", "300"]


def write_dataset(path: Path, episodes: int = 30, seed: int = 0, infos: bool = True,
                  overridden: int = 0) -> Path:
    """Uniformly random CartPole episodes, infos as the export writes them; the first ``overridden`` steps
    of each episode were applied by the producer against the proposal."""
    env, rng = gym.make("CartPole-v1"), np.random.default_rng(seed)
    writer = MinariWriter(path / "data", OBSERVATIONS, ACTIONS, dataset_id="cartpole/logged-v0")
    for episode in range(episodes):
        observation, _ = env.reset(seed=seed * 1000 + episode)
        observations, actions, rewards, done = [observation], [], [], False
        while not done:
            actions.append(int(rng.integers(2)))
            observation, reward, terminated, truncated, _ = env.step(actions[-1])
            observations.append(observation)
            rewards.append(reward)
            done = terminated or truncated
        count = len(actions)
        proposed = np.array([*actions, actions[-1]])
        proposed[:overridden] = 1 - proposed[:overridden]
        writer.add_episode({"observation": np.asarray(observations, np.float32)},
                           {"action": np.array(actions)}, rewards=np.asarray(rewards),
                           terminations=np.arange(count) == count - 1,
                           truncations=np.zeros(count, bool),
                           infos={"proposed_action": {"action": proposed},
                                  "log_prob": np.full(count + 1, math.log(0.5)),
                                  "applied_reported": np.arange(count + 1) < overridden} if infos else None)
    writer.close()
    env.close()
    return path


def save_run(run_dir: Path, seed: int) -> Path:
    """An untrained CartPole policy saved as training saves it (the default model)."""
    torch.manual_seed(seed)
    env = GymMazeEnv("CartPole-v1")
    config = {"policy": {"_target_": "maze_engine.ProbabilisticPolicyComposer",
                         "networks": [{"_target_": "maze_engine.FlattenConcatPolicyNet", "hidden_units": [16],
                                       "non_lin": "torch.nn.Tanh"}],
                         "substeps_with_separate_agent_nets": []},
              "distribution_mapper_config": []}
    policy_composer, _ = build_model_composers(config, env)
    save_torch_policy(run_dir, policy_composer.policy, config, env.observation_spaces_dict,
                      env.action_spaces_dict)
    return run_dir


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("evaluate")
    root = base / "artifacts"
    publish_policy(root, "cartpole", save_run(base / "run", seed=1))
    return {"run": base / "run", "root": root, "dataset": write_dataset(base / "logged")}


def run_cli(*arguments: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([MAZE_WORKER, "experience", "evaluate", *arguments], capture_output=True, text=True,
                          timeout=300, check=False)


def test_a_run_directory_is_evaluated_on_a_minari_dataset_end_to_end(inputs: dict[str, Path]) -> None:
    done = run_cli("--policy", str(inputs["run"]), "--dataset", str(inputs["dataset"]), "--gamma", "0.99",
                   "--seed", "3", "--json", *FAST)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert (report["episodes"], report["gamma"], report["bootstrap"]) == (30, 0.99, 50)
    assert report["policy"] == str(inputs["run"])
    assert set(report["estimates"]) == {"wis", "dr"}
    for estimate in report["estimates"].values():
        assert estimate["low"] <= estimate["value"] <= estimate["high"]
        assert 1.0 <= estimate["ess"] <= 30.0
        # An untrained net acts nearly uniformly, like the behaviour policy that logged the episodes.
        assert estimate["value"] == pytest.approx(report["behaviour_return"], rel=0.5)


def test_a_published_version_is_evaluated_and_the_table_names_each_estimate(
        inputs: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    for policy in ("published:cartpole@1", "published:cartpole"):
        code = evaluate_command(["--policy", policy, "--artifact-root", str(inputs["root"]), "--dataset",
                                 str(inputs["dataset"]), "--methods", "wis", *FAST])
        printed = capsys.readouterr().out
        assert code == 0
        assert "off-policy evaluation of published:cartpole@1" in printed
        assert "30 episodes" in printed
        assert [line.split()[0] for line in printed.splitlines()[2:]] == ["behaviour", "wis"]
        assert "95% interval [" in printed and "ESS " in printed


@pytest.mark.parametrize(("dataset", "message"), [
    ({"infos": False}, "behaviour log-probabilities: Minari dataset cartpole/logged-v0 carries none"),
    ({"overridden": 2}, r"60 of \d+ steps in 30 of 30 episodes .* have none"),
])
def test_data_without_propensities_is_refused(tmp_path: Path, inputs: dict[str, Path],
                                              dataset: dict[str, Any], message: str,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    path = write_dataset(tmp_path / "bad", episodes=30, **dataset)
    code = evaluate_command(["--policy", str(inputs["run"]), "--dataset", str(path), *FAST])
    assert code == 2
    error = capsys.readouterr().err
    assert error.startswith("maze-worker: error: ")
    assert re.search(message, error), error


@pytest.mark.parametrize(("arguments", "message"), [
    (["--policy", "published:nothing@1"], "policy 'nothing' version 1"),
    (["--policy", "published:cartpole@one"], "--policy: expected published:NAME@VERSION"),
    (["--dataset", "no/such-v0"], "--dataset: 'no/such-v0' is no path"),
    (["--gamma", "2"], "gamma: expected a discount in [0, 1], got 2.0"),
])
def test_bad_options_end_with_one_error_line(inputs: dict[str, Path], arguments: list[str], message: str,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    defaults = {"--policy": str(inputs["run"]), "--dataset": str(inputs["dataset"])}
    defaults.update(dict(zip(arguments[::2], arguments[1::2], strict=True)))
    options = [item for pair in defaults.items() for item in pair]
    code = evaluate_command([*options, "--artifact-root", str(inputs["root"]), *FAST])
    assert code == 2
    assert message in capsys.readouterr().err


def step_columns(steps: int, override_at: int | None = None) -> dict[str, Any]:
    """The columns of a record (docs/experience.md) for ``steps`` alternating proposals, applied unless
    ``override_at``."""
    proposal = np.arange(steps) % 2
    applied = proposal.copy()
    if override_at is not None:
        applied[override_at] = 1 - applied[override_at]
    observations = np.random.default_rng(steps).normal(0.0, 0.05, (steps, 4)).astype(np.float32)
    return {"seq": np.arange(steps), "observation": {"observation": observations},
            "action": {"action": proposal}, "log_prob": np.full(steps, math.log(0.5)),
            "applied_action": {"action": applied}, "applied_reported": np.zeros(steps, bool),
            "reward": np.ones(steps), "terminated": np.arange(steps) == steps - 1,
            "truncated": np.zeros(steps, bool), "time": np.zeros(steps)}


def recorded(steps: int, mode: str = "act", override_at: int | None = None) -> RecordedEpisode:
    return RecordedEpisode("run", "episode", "cartpole", 1, ["w1"], "done", steps,
                           step_columns(steps, override_at), None, mode=mode)


def test_recorded_episodes_keep_propensities_only_where_the_proposal_was_applied() -> None:
    data = from_recorded([recorded(3), recorded(2, override_at=1), recorded(2, mode="shadow")], "the stream")
    assert data.lengths.tolist() == [3, 2, 2]
    assert data.actions["action"].tolist() == [0, 1, 0, 0, 0, 0, 1]
    assert np.isnan(data.behaviour_log_probs).tolist() == [False] * 4 + [True] * 3


@pytest.mark.integration
def test_episodes_are_read_from_the_experience_stream(amqp_url: str, prefix: str, inputs: dict[str, Path],
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    settings = BrokerSettings(url=amqp_url, prefix=prefix)
    stream = topology.experience_stream(prefix)
    publisher = StreamPublisher(settings, "test experience evaluate")
    publisher.connect()
    try:
        publisher.declare_stream(stream, stream_arguments(1 << 24, "1h"))
        for index, steps in enumerate([5, 9, 12, 7]):
            publisher.publish(stream, encode_record(ExperienceRecord(
                run=uuid.uuid4().hex, episode=f"episode-{index}", chunk=0, final=True, worker="w1",
                policy_name="cartpole", policy_version=1, mode="act", first_seq=0, steps=steps,
                columns=step_columns(steps), end="done", published=time.time())))
    finally:
        publisher.close()
    code = evaluate_command(["--policy", str(inputs["run"]), "--dataset", f"stream:{prefix}",
                             "--url", amqp_url, "--idle-s", "1", "--json", *FAST])
    assert code == 0
    report = json.loads(capsys.readouterr().out)
    assert (report["episodes"], report["steps"], report["behaviour_return"]) == (4, 33, 33 / 4)
    assert report["dataset"] == f"stream:{prefix}"
