"""Recorded experience, shadow mode and describe requests against a real broker (in-process workers).

A recorded episode lands in ``<prefix>.experience`` with the documented fields; a stream that is refused or
deleted costs records, never replies; shadow mode reports the agreement of proposals with applied actions;
a worker describes its spaces over the broker and ``maze-worker describe`` prints the same; the export
writes a Minari dataset that Minari loads back.
"""

import json
import logging
import os
import subprocess
import sys
import uuid
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pika
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from conftest import BrokerCleanup  # noqa: E402
from worker_harness import running_worker, settings_for, state, wait_until  # noqa: E402

from worker.client import MazeClient  # noqa: E402
from worker.client.describe import describe_worker  # noqa: E402
from worker.experience.reader import read_episodes, read_records  # noqa: E402
from worker.settings import ExperienceSettings, ServingSettings, WorkerSettings  # noqa: E402

RANDOM = {"_target_": "maze_engine.RandomPolicy", "seed": 0}
MAZE_WORKER = str(Path(sys.executable).parent / "maze-worker")


def recording(amqp_url: str, prefix: str, cleanup: BrokerCleanup, chunk_steps: int = 1000,
              mode: str = "act") -> WorkerSettings:
    cleanup.queue(f"{prefix}.experience")
    return replace(settings_for(amqp_url, prefix), serving=ServingSettings(mode=mode),
                   experience=ExperienceSettings(record=True, chunk_steps=chunk_steps, backlog=64))


def play(client: MazeClient, length: int, applied: Any = None, episode_id: str | None = None) -> list[Any]:
    """One episode of ``length`` decisions and a final state; ``applied(seq, action)`` gives the applied
    action reported with each next state (None: not reported)."""
    rng = np.random.default_rng(0)
    episode = client.episode(episode_id)
    actions = [episode.step(state(0.1, rng))]
    for seq in range(1, length):
        report = None if applied is None else applied(seq, actions[-1])
        actions.append(episode.step(state(0.1, rng), reward=float(seq), applied_action=report))
    report = None if applied is None else applied(length, actions[-1])
    episode.close(state(0.2, rng), reward=float(length), applied_action=report)
    return actions


def metric(worker: Any, line_start: str) -> float:
    for line in worker.service.metrics.render().decode().splitlines():
        if line.startswith(line_start):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


@pytest.mark.integration
def test_a_recorded_episode_appears_in_the_stream_with_the_documented_fields(
        amqp_url: str, prefix: str, broker_cleanup: BrokerCleanup) -> None:
    settings = recording(amqp_url, prefix, broker_cleanup, chunk_steps=5)
    with running_worker(settings, policy=RANDOM) as worker, MazeClient(amqp_url, prefix) as client:
        actions = play(client, 12, applied=lambda seq, action: 1 - action if seq == 3 else None,
                       episode_id="recorded-1")
        wait_until(lambda: metric(worker, "maze_worker_experience_records_total") >= 3, "records published")
        worker_id = worker.service.worker_id
    records = list(read_records(settings.broker, idle_s=0.5))
    assert [(r.chunk, r.final, r.steps, r.first_seq) for r in records] == \
        [(0, False, 5, 0), (1, False, 5, 5), (2, True, 2, 10)]
    assert {r.run for r in records} == {records[0].run} and records[-1].end == "done"
    assert {(r.episode, r.worker, r.policy_name, r.policy_version, r.mode) for r in records} == \
        {("recorded-1", worker_id, "RandomPolicy", None, "act")}
    (episode,) = read_episodes(settings.broker, idle_s=0.5)
    columns = episode.columns
    assert columns is not None and episode.steps == 12
    assert columns["seq"].tolist() == list(range(12))
    sent = np.random.default_rng(0)
    np.testing.assert_allclose(columns["observation"]["observation"][0], np.float32(state(0.1, sent)))
    assert columns["action"]["action"].tolist() == actions
    np.testing.assert_allclose(columns["log_prob"], np.log(0.5))
    applied = columns["applied_action"]["action"].tolist()
    assert applied[2] == 1 - actions[2] and applied[:2] + applied[3:] == actions[:2] + actions[3:]
    assert columns["applied_reported"].tolist() == [seq == 2 for seq in range(12)]
    assert columns["reward"].tolist() == [float(seq) for seq in range(1, 13)]
    assert columns["terminated"].tolist() == [False] * 11 + [True] and not columns["truncated"].any()
    assert np.all(np.diff(columns["time"]) >= 0)
    assert episode.final_observation["observation"][0] == np.float32(0.2)


@pytest.mark.integration
@pytest.mark.parametrize("trouble", ["refused", "missing"])
def test_a_refused_or_missing_stream_never_stops_serving_nor_loses_a_reply(
        trouble: str, amqp_url: str, prefix: str, broker_cleanup: BrokerCleanup,
        amqp_connection: pika.BlockingConnection, caplog: pytest.LogCaptureFixture) -> None:
    settings = recording(amqp_url, prefix, broker_cleanup, chunk_steps=3)
    stream = f"{prefix}.experience"
    if trouble == "refused":  # a classic queue of that name: declaring the stream fails (406)
        amqp_connection.channel().queue_declare(stream, durable=True)
    caplog.set_level(logging.WARNING, logger="worker.experience.publisher")
    with running_worker(settings) as worker, MazeClient(amqp_url, prefix, timeout=10) as client:
        if trouble == "missing":
            wait_until(lambda: worker.service.experience.ready.is_set(), "the stream declared")
            amqp_connection.channel().queue_delete(stream)
        replies = [action for _ in range(15) for action in play(client, 8)]
        assert len(replies) == 15 * 8  # every state answered (an error reply would have raised)
        dropped = 'maze_worker_experience_records_dropped_total{reason="%s"}'
        reason = "refused" if trouble == "refused" else "stream_missing"
        wait_until(lambda: metric(worker, dropped % reason) >= 1, "dropped records counted")
        if trouble == "missing":  # declared again: later records are published
            wait_until(lambda: metric(worker, "maze_worker_experience_records_total") >= 1,
                       "records published again", timeout=30,
                       step=lambda: play(client, 8))
    text = caplog.text
    assert ("cannot be declared" in text and "serving goes on" in text) if trouble == "refused" \
        else "does not exist" in text


@pytest.mark.integration
def test_shadow_mode_reports_the_agreement_per_policy_version(amqp_url: str, prefix: str) -> None:
    settings = replace(settings_for(amqp_url, prefix), serving=ServingSettings(mode="shadow"))
    with running_worker(settings) as worker, MazeClient(amqp_url, prefix) as client:
        # The producer's controller agrees with the worker at odd seqs, disagrees at even ones, and does
        # not report at seq 5.
        play(client, 9, applied=lambda seq, action: None if seq == 5 else (action if seq % 2 else 1 - action))
        counted = 'maze_worker_applied_actions_total{agreed="%s",policy_version="none"}'
        wait_until(lambda: metric(worker, counted % "true") + metric(worker, counted % "false") == 8,
                   "applied actions counted")
        assert (metric(worker, counted % "true"), metric(worker, counted % "false"),
                metric(worker, counted % "unreported")) == (4.0, 4.0, 1.0)
        assert metric(worker, 'maze_worker_shadow_agreement{policy_version="none"}') == 0.5


@pytest.mark.integration
def test_a_worker_describes_its_spaces_and_the_command_prints_the_same(amqp_url: str, prefix: str) -> None:
    with running_worker(settings_for(amqp_url, prefix)) as worker:
        described = describe_worker(amqp_url, prefix, timeout=10)
        assert described["worker"] == worker.service.worker_id
    assert described["action"] == {"type": "Discrete", "n": 2, "start": 0}
    assert described["state"]["type"] == "Box" and described["state"]["shape"] == [4]
    assert described["observation"]["spaces"][0][0] == "observation"
    assert described["serving_mode"] == "act" and described["experience"]["record"] is False
    printed = subprocess.run([MAZE_WORKER, "describe", "serving.mode=shadow"], capture_output=True,
                             text=True, timeout=120, check=True)
    offline = json.loads(printed.stdout)
    assert {key: offline[key] for key in ("state", "action", "observation", "policy_action")} == \
        {key: described[key] for key in ("state", "action", "observation", "policy_action")}
    assert offline["serving_mode"] == "shadow"


@pytest.mark.integration
def test_export_writes_a_minari_dataset_that_loads_back(amqp_url: str, prefix: str,
                                                        broker_cleanup: BrokerCleanup, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    settings = recording(amqp_url, prefix, broker_cleanup, chunk_steps=4)
    with running_worker(settings, policy=RANDOM) as worker, MazeClient(amqp_url, prefix) as client:
        lengths = [5, 9, 3]
        played = [play(client, length, applied=lambda seq, action: 0) for length in lengths]
        wait_until(lambda: metric(worker, "maze_worker_experience_steps_total") == sum(lengths),
                   "every step published")
    dataset_id = f"tests/{prefix}-v0"
    env = {**os.environ, "MAZE_AMQP_URL": amqp_url}
    done = subprocess.run([MAZE_WORKER, "experience", "export", "--prefix", prefix, "--dataset-id",
                           dataset_id, "--out", str(tmp_path), "--idle-s", "0.5"], capture_output=True,
                          text=True, timeout=120, env=env)
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert (summary["episodes"], summary["steps"]) == (3, sum(lengths))
    assert "exporting" in done.stderr  # the progress bar

    import minari

    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path))
    dataset = minari.load_dataset(dataset_id)
    assert (dataset.total_episodes, dataset.total_steps) == (3, sum(lengths))
    assert list(dataset.observation_space.spaces) == ["observation"]
    assert list(dataset.action_space.spaces) == ["action"]
    episodes = sorted(dataset.iterate_episodes(), key=lambda episode: len(episode.rewards))
    for episode, length, actions in zip(episodes, sorted(lengths), sorted(played, key=len), strict=True):
        assert episode.observations["observation"].shape == (length + 1, 4)
        assert episode.actions["action"].tolist() == [0] * length  # the applied actions
        assert episode.infos["proposed_action"]["action"][:length].tolist() == actions
        assert episode.terminations.tolist() == [False] * (length - 1) + [True]
    metadata = list(dataset.storage.get_episode_metadata(range(3)))
    assert {json.loads(entry["maze"])["policy"] for entry in metadata} == {"RandomPolicy"}

    for arguments, expected in [(["--policy", "TorchPolicy"], "--policy: no record of policy 'TorchPolicy'"),
                                (["--from", "next"], "is empty"),
                                (["--prefix", f"{prefix}-none"], "does not exist")]:
        failing_id = f"tests/{uuid.uuid4().hex[:8]}-v0"
        options = ["--prefix", prefix, "--dataset-id", failing_id, "--out", str(tmp_path), "--idle-s", "0.5",
                   "--no-progress"]
        if arguments[0] == "--prefix":
            options[1] = arguments[1]
            arguments = []
        failed = subprocess.run([MAZE_WORKER, "experience", "export", *options, *arguments],
                                capture_output=True, text=True, timeout=120, env=env)
        assert failed.returncode == 2 and expected in failed.stderr, failed.stderr
        assert not (tmp_path / failing_id).exists()  # a failed export leaves nothing behind
