"""Minari datasets written by MinariWriter load with Minari itself (by id and by path) and read back through
``read_trajectories`` and ``load_steps``; bad ids, missing datasets and spaces that do not fit are refused
naming the dataset."""

from pathlib import Path
from typing import Any

import gymnasium as gym
import minari
import numpy as np
import pytest
from gymnasium import spaces

from maze_engine import read_trajectories
from maze_engine.records.minari import (
    MinariDatasetError,
    MinariWriter,
    find_dataset,
    load_steps,
    merge_datasets,
)

OBSERVATION = spaces.Dict({"observation": spaces.Box(-10.0, 10.0, (3,), np.float32)})
DISCRETE = spaces.Dict({"action": spaces.Discrete(3)})
BOX = spaces.Dict({"action": spaces.Box(-1.0, 1.0, (2,), np.float32)})
LENGTHS = (4, 1, 6)


def _episode(length: int, action_space: spaces.Dict, seed: int) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    sample = [action_space.sample() for _ in range(length)]
    return {"observations": {"observation": rng.normal(size=(length + 1, 3)).astype(np.float32)},
            "actions": {"action": np.stack([action["action"] for action in sample])},
            "rewards": rng.normal(size=length), "terminations": np.r_[np.zeros(length - 1, bool), True],
            "truncations": np.zeros(length, bool)}


def _write(root: Path, dataset_id: str, action_space: spaces.Dict = DISCRETE,
           lengths: tuple[int, ...] = LENGTHS) -> list[dict[str, Any]]:
    episodes = [_episode(length, action_space, seed) for seed, length in enumerate(lengths)]
    writer = MinariWriter(root / dataset_id / "data", OBSERVATION, action_space, dataset_id,
                          env_spec=gym.spec("CartPole-v1"), metadata={"algorithm_name": "tests"})
    for episode in episodes:
        writer.add_episode(**episode)
    assert writer.close() == (root / dataset_id / "data").absolute()
    return episodes


@pytest.mark.parametrize("action_space", [DISCRETE, BOX], ids=["discrete", "box"])
def test_written_datasets_load_with_minari_by_id_and_by_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                             action_space: spaces.Dict) -> None:
    episodes = _write(tmp_path, "tests/written-v0", action_space)
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path))
    by_id = minari.load_dataset("tests/written-v0")
    by_path = minari.MinariDataset(tmp_path / "tests/written-v0" / "data")
    assert "tests/written-v0" in minari.list_local_datasets()
    for dataset in (by_id, by_path):
        assert (dataset.total_episodes, dataset.total_steps) == (3, sum(LENGTHS))
        assert dataset.observation_space == OBSERVATION and dataset.action_space == action_space
        assert dataset.spec.env_spec is not None and dataset.spec.env_spec.id == "CartPole-v1"
        for stored, written in zip(dataset.iterate_episodes(), episodes, strict=True):
            np.testing.assert_array_equal(stored.observations["observation"],
                                          written["observations"]["observation"])
            np.testing.assert_array_equal(stored.actions["action"], written["actions"]["action"])
            np.testing.assert_array_equal(stored.rewards, written["rewards"])
            np.testing.assert_array_equal(stored.terminations, written["terminations"])
    assert by_id.storage.metadata["algorithm_name"] == "tests"


def test_read_trajectories_reads_minari_datasets_by_path_and_by_id(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    episodes = _write(tmp_path, "tests/read-v1")
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path))
    for source in (tmp_path / "tests/read-v1", tmp_path / "tests/read-v1/data", "tests/read-v1"):
        trajectories = list(read_trajectories(source))
        assert [len(trajectory) for trajectory in trajectories] == list(LENGTHS)
        for trajectory, written in zip(trajectories, episodes, strict=True):
            # The N observations the actions were taken on; the last one stays in the dataset.
            np.testing.assert_array_equal(trajectory.observations["observation"],
                                          written["observations"]["observation"][:-1])
            np.testing.assert_array_equal(trajectory.actions["action"], written["actions"]["action"])
            assert trajectory.complete and trajectory.dones[-1] and trajectory.terminated[-1]
            assert trajectory.metadata["dataset_id"] == "tests/read-v1"
        step = trajectories[0].step(1)
        assert step.action == {"action": episodes[0]["actions"]["action"][1]}


def test_load_steps_stacks_the_episodes_and_adapts_plain_spaces(tmp_path: Path) -> None:
    episodes = _write(tmp_path, "mine-v0")
    data = load_steps(tmp_path / "mine-v0", OBSERVATION, DISCRETE)
    assert data.episode_lengths.tolist() == list(LENGTHS)
    np.testing.assert_array_equal(data.actions["action"],
                                  np.concatenate([episode["actions"]["action"] for episode in episodes]))
    assert data.observations["observation"].shape == (sum(LENGTHS), 3)

    # A dataset of someone else's with plain gymnasium spaces reads as GymMazeEnv shows them to a policy.
    plain = MinariWriter(tmp_path / "plain-v0" / "data", OBSERVATION["observation"], spaces.Discrete(3),
                         "plain-v0")
    plain.add_episode(np.zeros((3, 3), np.float32), np.array([2, 1]), np.ones(2), np.array([False, True]),
                      np.zeros(2, bool))
    plain.close()
    data = load_steps(tmp_path / "plain-v0", OBSERVATION, DISCRETE)
    assert data.actions["action"].tolist() == [2, 1] and data.observations["observation"].shape == (2, 3)
    assert [len(trajectory) for trajectory in read_trajectories(tmp_path / "plain-v0")] == [2]


@pytest.mark.parametrize(("observation_space", "action_space", "fragment"), [
    (spaces.Dict({"observation": spaces.Box(-10.0, 10.0, (4,), np.float32)}), DISCRETE, "observation space"),
    (OBSERVATION, spaces.Dict({"action": spaces.Discrete(2)}), "action space"),
    (OBSERVATION, spaces.Dict({"steer": spaces.Discrete(3)}), "action space"),
])
def test_spaces_that_do_not_match_are_refused_naming_the_dataset(tmp_path: Path, observation_space: Any,
                                                                 action_space: Any, fragment: str) -> None:
    _write(tmp_path, "tests/spaces-v0")
    with pytest.raises(MinariDatasetError) as caught:
        load_steps(tmp_path / "tests/spaces-v0", observation_space, action_space)
    message = str(caught.value)
    assert message.startswith(f"dataset: the {fragment} of Minari dataset tests/spaces-v0 (")
    assert "does not match the env's" in message and "env=..., wrappers=..." in message


def test_unknown_ids_bad_ids_paths_and_streams_are_refused(tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    _write(tmp_path, "tests/known-v0")
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    assert find_dataset("tests/known-v0") == tmp_path / "tests/known-v0" / "data"
    cases = {
        "tests/knwon-v0": ["'tests/knwon-v0' is no path, and no Minari dataset of that id is in",
                           "did you mean tests/known-v0?", "minari download tests/knwon-v0"],
        "other/thing-v3": ["local datasets: tests/known-v0"],
        "no_version": ["expected a Minari dataset id (namespace/)name-v<version>", "'no_version'"],
        str(tmp_path): ["is not a Minari dataset", "it holds the datasets tests/known-v0"],
        "./missing": ["no Minari dataset at"],
        "stream:line7": ["names the experience stream of maze-worker",
                         "maze-worker submit train algorithm=bc dataset=stream:line7",
                         "maze-worker experience export --prefix line7"],
    }
    for source, fragments in cases.items():
        with pytest.raises(MinariDatasetError) as caught:
            find_dataset(source)
        assert str(caught.value).startswith("dataset: ")
        for fragment in fragments:
            assert fragment in str(caught.value), str(caught.value)
    with pytest.raises(MinariDatasetError, match="already exists"):
        _write(tmp_path, "tests/known-v0")


def test_parts_merge_into_one_dataset_in_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first = _write(tmp_path / "parts" / "000", "tests/merged-v0", lengths=(2, 3))
    second = _write(tmp_path / "parts" / "001", "tests/merged-v0", lengths=(5,))
    parts = [tmp_path / "parts" / name / "tests/merged-v0" / "data" for name in ("000", "001")]
    target = merge_datasets(parts, tmp_path / "tests/merged-v0" / "data", "tests/merged-v0")
    assert not any(part.exists() for part in parts)
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path))
    dataset = minari.load_dataset("tests/merged-v0")
    assert dataset.storage.data_path == target
    assert [len(episode) for episode in dataset.iterate_episodes()] == [2, 3, 5]
    for stored, written in zip(dataset.iterate_episodes(), first + second, strict=True):
        np.testing.assert_array_equal(stored.actions["action"], written["actions"]["action"])
    assert dataset.spec.env_spec is not None and dataset.spec.env_spec.id == "CartPole-v1"


def test_an_episode_needs_one_observation_more_than_steps(tmp_path: Path) -> None:
    writer = MinariWriter(tmp_path / "bad-v0" / "data", OBSERVATION, DISCRETE, "bad-v0")
    with pytest.raises(MinariDatasetError, match="N \\+ 1 observations and N actions; got 2 observations, "
                                                 "2 actions and 2 rewards"):
        writer.add_episode({"observation": np.zeros((2, 3), np.float32)}, {"action": np.array([0, 1])},
                           np.ones(2), np.zeros(2, bool), np.zeros(2, bool))
