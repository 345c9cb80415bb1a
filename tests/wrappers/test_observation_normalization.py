"""ObservationNormalizationWrapper: normalized values, spaces, estimation, JSON save/load, deployments."""

import json
import logging

import numpy as np
import pytest

from maze_engine import ConfigError, GymMazeEnv, ObservationNormalizationWrapper, instantiate
from maze_engine.core.env.gym_env import GymCoreEnv
from maze_engine.wrappers.observation.normalization import MissingStatisticsError

MEAN_STD = {"observation": {"mean": [1.0, 11.0], "std": [2.0, 4.0]}}


def _wrap(env, tmp_path, **kwargs):
    kwargs.setdefault("statistics_dump", str(tmp_path / "statistics.json"))
    return ObservationNormalizationWrapper.wrap(env, **kwargs)


def _run(env, steps):
    observation = env.reset()
    for _ in range(steps):
        observation = env.step({"action": 0})[0]
    return observation


@pytest.mark.parametrize(("steps", "expected"), [(0, [-0.5, -0.25]), (3, [1.0, 0.5]), (9, [4.0, 2.0])])
def test_mean_zero_std_one_values(counter_env, tmp_path, steps, expected):
    env = _wrap(counter_env(), tmp_path, default_statistics=MEAN_STD)
    observation = _run(env, steps)["observation"]
    assert observation.dtype == np.float32
    assert observation.tolist() == expected


@pytest.mark.parametrize(("steps", "expected"), [(0, [0.0, 0.0]), (2, [0.5, 0.5]), (7, [1.0, 1.0])])
def test_range_zero_one_with_clipping(counter_env, tmp_path, steps, expected):
    env = _wrap(counter_env(), tmp_path, default_strategy="range_zero_one",
                default_strategy_config={"clip_range": [0, 1]},
                default_statistics={"min": [0, 10], "max": [4, 14]})
    assert _run(env, steps)["observation"].tolist() == expected


def test_space_bounds_follow_statistics_and_clipping(counter_env, tmp_path):
    env = _wrap(counter_env(), tmp_path, default_statistics=MEAN_STD)
    space = env.observation_space["observation"]
    assert space.dtype == np.float32
    assert space.low.tolist() == [-50.5, -27.75] and space.high.tolist() == [49.5, 22.25]
    clipped = _wrap(counter_env(), tmp_path, default_statistics=MEAN_STD,
                    default_strategy_config={"clip_range": [-1, None]})
    space = clipped.observation_space["observation"]
    assert space.low.tolist() == [-1, -1] and space.high.tolist() == [49.5, 22.25]
    for steps in (0, 3, 50):
        assert clipped.observation_space.contains(_run(clipped, steps))
    # The env below keeps its own space.
    assert clipped.env.observation_space["observation"].low.tolist() == [-100, -100]


def test_missing_statistics_are_estimated_on_first_reset(counter_env, tmp_path, caplog):
    dump = tmp_path / "statistics.json"
    env = _wrap(counter_env(terminate_at=5), tmp_path, n_sampling_steps=10)
    assert env.missing_statistics() == ["observation"]
    with caplog.at_level(logging.WARNING):
        observation = env.reset()
    assert "estimating" in caplog.text
    # Sampled: reset 0, steps 1..5 (done), reset 0, steps 1..5 (done), reset 0.
    counts = np.array([0, 1, 2, 3, 4, 5] * 2 + [0], dtype=np.float64)
    statistics = env.get_statistics()["observation"]
    np.testing.assert_allclose(statistics["mean"], [counts.mean(), counts.mean() + 10], rtol=1e-6)
    np.testing.assert_allclose(statistics["std"], [counts.std(), counts.std()], rtol=1e-6)
    np.testing.assert_allclose(observation["observation"], -counts.mean() / counts.std(), rtol=1e-5)
    written = json.loads(dump.read_text())
    assert written["format"] == "maze_engine.observation_statistics"
    assert written["strategies"] == {"observation": "MeanZeroStdOneObservationNormalizationStrategy"}
    np.testing.assert_allclose(written["statistics"]["observation"]["mean"], statistics["mean"])


def test_save_and_load_round_trip(counter_env, tmp_path):
    source = _wrap(counter_env(terminate_at=7), tmp_path, statistics_dump=None)
    source.estimate_statistics(n_steps=20)
    path = tmp_path / "run" / "stats.json"
    source.save_statistics(path)
    assert json.loads(path.read_text())["version"] == 1
    target = _wrap(counter_env(), tmp_path, statistics_dump=None)
    target.load_statistics(path)
    for key, values in source.get_statistics()["observation"].items():
        np.testing.assert_array_equal(values, target.get_statistics()["observation"][key])
    np.testing.assert_array_equal(_run(source, 3)["observation"], _run(target, 3)["observation"])


def test_existing_dump_is_loaded_at_construction(counter_env, tmp_path):
    first = _wrap(counter_env(), tmp_path, default_statistics=MEAN_STD)
    first.save_statistics(tmp_path / "statistics.json")
    second = _wrap(counter_env(), tmp_path)
    assert second.missing_statistics() == []
    assert _run(second, 3)["observation"].tolist() == [1.0, 0.5]


def test_manual_config_wins_and_survives_estimation(counter_env, tmp_path):
    manual = {"observation": {"strategy": "range_zero_one", "strategy_config": {"clip_range": [0, 1]},
                              "statistics": {"min": [0, 10], "max": [10, 20]}}}
    env = _wrap(counter_env(), tmp_path, manual_config=manual)
    env.estimate_statistics(n_steps=5)
    assert env.get_statistics()["observation"]["max"].tolist() == [10, 20]
    assert _run(env, 5)["observation"].tolist() == [0.5, 0.5]


def test_estimate_without_overwrite_keeps_known_statistics(counter_env, tmp_path):
    env = _wrap(counter_env(), tmp_path, default_statistics=MEAN_STD)
    env.estimate_statistics(n_steps=5, overwrite=False)
    assert env.get_statistics()["observation"]["std"].tolist() == [2.0, 4.0]
    env.estimate_statistics(n_steps=5)
    assert env.get_statistics()["observation"]["std"].tolist() != [2.0, 4.0]


def test_dict_observations_exclude_and_non_box_keys(counter_env, tmp_path):
    env = _wrap(counter_env(dict_obs=True), tmp_path,
                default_statistics={"vector": {"mean": 0.0, "std": 2.0}})
    observation = _run(env, 4)
    assert observation["vector"].tolist() == [2.0, 7.0]
    assert observation["count"] == 4  # Discrete: passed through unchanged
    assert list(env.get_statistics()) == ["vector"]
    excluded = _wrap(counter_env(dict_obs=True), tmp_path, exclude=["vector"])
    assert excluded.missing_statistics() == []
    assert _run(excluded, 2)["vector"].dtype == np.float32
    assert excluded.observation_space == excluded.env.observation_space


def test_axis_none_gives_scalar_statistics(counter_env, tmp_path):
    env = _wrap(counter_env(), tmp_path, default_strategy_config={"axis": None}, statistics_dump=None)
    statistics = env.estimate_statistics(n_steps=4)["observation"]
    # Samples 0..4 and 10..14 pooled together.
    assert statistics["mean"].shape == ()
    assert float(statistics["mean"]) == pytest.approx(7.0)


def test_maze_class_paths_and_target_config(counter_env, tmp_path):
    config = {"_target_": "maze.core.wrappers.observation_normalization.observation_normalization_wrapper."
                          "ObservationNormalizationWrapper",
              "default_strategy": "maze.core.wrappers.observation_normalization.normalization_strategies."
                                  "range_zero_one.RangeZeroOneObservationNormalizationStrategy",
              "default_strategy_config": {"clip_range": [None, None], "axis": 0},
              "default_statistics": None, "statistics_dump": str(tmp_path / "s.json"),
              "sampling_policy": {"_target_": "maze_engine.RandomPolicy", "seed": 3},
              "exclude": None, "manual_config": None}
    env = instantiate(config, env=counter_env())
    assert isinstance(env, ObservationNormalizationWrapper)
    assert set(env.estimate_statistics(n_steps=3)["observation"]) == {"min", "max"}


def test_seeded_estimation_is_reproducible(tmp_path):
    def estimate(seed):
        env = _wrap(GymMazeEnv("CartPole-v1"), tmp_path, statistics_dump=None, n_sampling_steps=50)
        env.seed(seed)
        return env.estimate_statistics()["observation"]["mean"]

    np.testing.assert_array_equal(estimate(4), estimate(4))
    assert not np.array_equal(estimate(4), estimate(5))


class ExternalGymCoreEnv(GymCoreEnv):
    """Stands in for a deployment's core env: states come from outside, so sampling must not happen."""

    is_external = True


def test_external_env_without_statistics_raises(counter_env, tmp_path):
    inner = counter_env()
    env = _wrap(inner, tmp_path)
    inner.core_env = ExternalGymCoreEnv(inner.core_env.env)
    with pytest.raises(MissingStatisticsError, match="load_statistics"):
        env.reset()
    with pytest.raises(MissingStatisticsError):
        env.estimate_statistics()
    env.set_statistics(MEAN_STD)
    assert env.reset()["observation"].tolist() == [-0.5, -0.25]


@pytest.mark.parametrize(("kwargs", "field"), [
    ({"default_strategy": "zscore"}, "default_strategy"),
    ({"default_strategy_config": {"clip_range": [1, 0]}}, "default_strategy_config"),
    ({"default_strategy_config": {"clip": [0, 1]}}, "default_strategy_config"),
    ({"default_strategy_config": {"axis": 1}}, "default_strategy_config"),
    ({"exclude": ["nope"]}, r"exclude\[0\]"),
    ({"manual_config": {"count": {"strategy": "range_zero_one"}}}, "manual_config.count"),
    ({"manual_config": {"vector": {"clip_range": [0, 1]}}}, "manual_config.vector"),
    ({"default_statistics": {"vector": {"mean": [0, 0, 0], "std": 1}}}, "vector.statistics.mean"),
    ({"default_statistics": {"vector": {"min": 0, "max": 1}}}, "vector.statistics"),
    ({"default_statistics": {"vector": {"mean": 0, "std": float("nan")}}}, "vector.statistics.std"),
    ({"n_sampling_steps": 0}, "n_sampling_steps"),
])
def test_config_errors_name_the_field(counter_env, tmp_path, kwargs, field):
    with pytest.raises(ConfigError, match=field):
        _wrap(counter_env(dict_obs=True), tmp_path, **kwargs)


def test_load_rejects_foreign_files(counter_env, tmp_path):
    env = _wrap(counter_env(), tmp_path)
    path = tmp_path / "other.json"
    path.write_text(json.dumps({"observation": {"mean": 0, "std": 1}}))
    with pytest.raises(ConfigError, match="statistics_dump"):
        env.load_statistics(path)
    with pytest.raises(ConfigError, match="statistics_dump"):
        env.load_statistics(tmp_path / "absent.json")
