"""MinariRecordingWrapper: each episode lands in the dataset with the observation each action was taken on,
the observation after the last step, and terminations or truncations as the episode ended."""

from pathlib import Path

import minari
import numpy as np
import pytest

from maze_engine import ConfigError, TimeLimitWrapper
from maze_engine.records.minari import MinariDatasetError
from maze_engine.wrappers.recording.minari import MinariRecordingWrapper
from maze_engine.wrappers.wrapper import Wrapper


def _play(env, actions):
    env.reset()
    for action in actions:
        env.step({"action": action})


def test_episodes_hold_n_plus_one_observations_and_how_they_ended(counter_env, tmp_path: Path) -> None:
    path = tmp_path / "counter-v0" / "data"
    env = MinariRecordingWrapper.wrap(counter_env(terminate_at=3), path=path, dataset_id="counter-v0")
    _play(env, [2, 1, 0])  # terminates after 3 steps
    _play(env, [1, 1, 1])
    _play(env, [0, 2])     # cut short by the close
    env.close()
    episodes = list(minari.MinariDataset(path).iterate_episodes())
    assert [len(episode) for episode in episodes] == [3, 3, 2]
    first = episodes[0]
    # CounterEnv observes the step count: observation t is what action t was taken on, the last one follows.
    np.testing.assert_array_equal(first.observations["observation"][:, 0], [0, 1, 2, 3])
    assert first.actions["action"].tolist() == [2, 1, 0] and first.rewards.tolist() == [2, 1, 0]
    assert first.terminations.tolist() == [False, False, True] and not first.truncations.any()
    assert episodes[2].truncations.tolist() == [False, True] and not episodes[2].terminations.any()


def test_log_probs_given_with_the_step_land_in_infos_the_way_the_worker_export_writes_them(
        counter_env, tmp_path: Path) -> None:
    path = tmp_path / "logged-v0" / "data"
    env = MinariRecordingWrapper.wrap(counter_env(terminate_at=3), path=path, dataset_id="logged-v0",
                                      metadata={"description": "three steps"})
    env.reset()
    for action, log_prob in [(2, -0.5), (1, None), (0, -1.5)]:  # None: the policy could not say
        env.step({"action": action}, log_prob=log_prob)
    _play(env, [1])  # stepped without log-probabilities, cut short by the close
    env.close()
    first, second = minari.MinariDataset(path).iterate_episodes()
    # N + 1 entries, the last NaN, as maze-worker experience export writes them (OPE reads both).
    np.testing.assert_array_equal(first.infos["log_prob"], [-0.5, np.nan, -1.5, np.nan])
    assert np.isnan(second.infos["log_prob"]).all() and second.infos["log_prob"].shape == (2,)
    assert minari.MinariDataset(path).storage.metadata["description"] == "three steps"


def test_time_limit_truncation_and_a_reset_that_cuts_an_episode_short(counter_env, tmp_path: Path) -> None:
    path = tmp_path / "limits-v0" / "data"
    env = MinariRecordingWrapper.wrap(TimeLimitWrapper.wrap(counter_env(), max_episode_steps=2), path=path,
                                      dataset_id="limits-v0")
    _play(env, [1, 1])
    _play(env, [0])
    env.reset()  # nothing recorded in this one: no episode
    env.close()
    episodes = list(minari.MinariDataset(path).iterate_episodes())
    assert [episode.truncations.tolist() for episode in episodes] == [[False, True], [True]]
    np.testing.assert_array_equal(episodes[1].observations["observation"][:, 0], [0, 1])


def test_finish_completes_the_dataset_and_leaves_the_env_open(counter_env, tmp_path: Path) -> None:
    path = tmp_path / "open-v0" / "data"
    env = MinariRecordingWrapper.wrap(counter_env(terminate_at=2), path=path, dataset_id="open-v0")
    _play(env, [1, 1])
    env.finish()
    assert minari.MinariDataset(path).total_steps == 2
    env.finish()  # a second finish writes nothing more
    env.reset()
    env.close()
    assert minari.MinariDataset(path).total_episodes == 1


def test_no_episode_no_dataset(counter_env, tmp_path: Path) -> None:
    env = MinariRecordingWrapper.wrap(counter_env(), path=tmp_path / "none-v0" / "data", dataset_id="none-v0")
    env.reset()
    env.close()
    assert not (tmp_path / "none-v0").exists()


def test_bad_ids_and_envs_with_several_actors_are_refused(counter_env, tmp_path: Path) -> None:
    with pytest.raises(MinariDatasetError, match="record_minari: expected a Minari dataset id"):
        MinariRecordingWrapper.wrap(counter_env(), path=tmp_path, dataset_id="no version")

    class TwoActors(Wrapper):
        @property
        def agent_counts_dict(self):
            return {0: 1, 1: 2}

    with pytest.raises(ConfigError, match="one actor; this env has the actors \\{0: 1, 1: 2\\}"):
        MinariRecordingWrapper.wrap(TwoActors(counter_env()), path=tmp_path, dataset_id="two-v0")
