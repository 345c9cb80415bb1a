"""``maze-worker experience evaluate``: a run directory or a published version evaluated on a Minari dataset
written as ``maze-worker experience export`` writes them (end to end), the table and the JSON line, and the
refusals of data without propensities; recorded episodes read with the export's propensity rules, and from
the experience stream itself (against RabbitMQ)."""

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from evaluation_harness import publish_episodes, save_run, step_columns, write_dataset  # noqa: E402

from worker.experience.evaluate import evaluate_command, from_recorded  # noqa: E402
from worker.experience.reader import RecordedEpisode  # noqa: E402
from worker.policy_store.store import publish_policy  # noqa: E402

MAZE_WORKER = str(Path(sys.executable).parent / "maze-worker")
FAST = ["--bootstrap", "50", "--fqe-steps", "300"]


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
    publish_episodes(amqp_url, prefix, [5, 9, 12, 7])
    code = evaluate_command(["--policy", str(inputs["run"]), "--dataset", f"stream:{prefix}",
                             "--url", amqp_url, "--idle-s", "1", "--json", *FAST])
    assert code == 0
    report = json.loads(capsys.readouterr().out)
    assert (report["episodes"], report["steps"], report["behaviour_return"]) == (4, 33, 33 / 4)
    assert report["dataset"] == f"stream:{prefix}"
