"""instantiate and resolve_target: every config form, context kwargs, errors, and the maze.* alias."""

from collections import OrderedDict
from typing import Any

import pytest
from omegaconf import OmegaConf

from maze_engine import ConfigError, GymMazeEnv, LogStatsWrapper, RandomPolicy, StructuredPolicy
from maze_engine.core.factory import accepted_kwargs, instantiate, resolve_target


class Point:
    """A small target with a required and an optional argument."""

    def __init__(self, x: int, y: int = 0) -> None:
        self.x, self.y = x, y


class Flexible:
    def __init__(self, **kwargs: Any) -> None:
        self.kwargs = kwargs


class Broken:
    def __init__(self, value: int) -> None:
        raise TypeError("inner failure")


PATH = f"{__name__}.Point"


@pytest.mark.parametrize("config", [
    {"_target_": PATH, "x": 1, "y": 2},
    OmegaConf.create({"_target_": PATH, "x": 1, "y": 2}),
])
def test_mapping_with_target(config):
    point: Point = instantiate(config)
    assert isinstance(point, Point) and (point.x, point.y) == (1, 2)


def test_class_path_and_class_are_called_with_the_context():
    assert instantiate(PATH, x=5).x == 5
    assert instantiate(Point, x=6, unused="ignored").x == 6


def test_instances_pass_through():
    point = Point(1)
    assert instantiate(point) is point
    assert instantiate(point, Point) is point


def test_context_only_where_accepted_and_config_wins():
    point: Point = instantiate({"_target_": PATH, "x": 1}, y=9, z="not a parameter")
    assert (point.x, point.y) == (1, 9)
    point = instantiate({"_target_": PATH, "x": 1, "y": 2}, y=9)
    assert point.y == 2
    flexible: Flexible = instantiate({"_target_": f"{__name__}.Flexible", "a": 1}, b=2)
    assert flexible.kwargs == {"a": 1, "b": 2}
    assert accepted_kwargs(Point, {"x": 1, "q": 2}) == {"x": 1}


def test_policy_from_config_gets_action_spaces_from_context():
    env = GymMazeEnv("CartPole-v1")
    policy = instantiate({"_target_": "maze_engine.RandomPolicy", "seed": 1}, StructuredPolicy,
                         action_spaces_dict=env.action_spaces_dict, env=env)
    assert isinstance(policy, RandomPolicy)
    assert env.action_space.contains(policy.compute_action({}))


@pytest.mark.parametrize("path", [
    "maze.core.wrappers.log_stats_wrapper.LogStatsWrapper",
    "maze.core.wrappers.LogStatsWrapper",
    "maze_engine.LogStatsWrapper",
    "maze_engine.wrappers.logging.log_stats.LogStatsWrapper",
])
def test_maze_paths_resolve_to_our_classes(path):
    assert resolve_target(path) is LogStatsWrapper


def test_wrapper_from_maze_path_with_env_context():
    env: LogStatsWrapper = instantiate({"_target_": "maze.core.wrappers.log_stats_wrapper.LogStatsWrapper",
                                        "logging_prefix": "eval"}, env=GymMazeEnv("CartPole-v1"))
    assert isinstance(env, LogStatsWrapper) and env.logging_prefix == "eval"


def test_stdlib_targets():
    assert instantiate({"_target_": "collections.OrderedDict", "a": 1}) == OrderedDict(a=1)


@pytest.mark.parametrize(("config", "message"), [
    ({"x": 1}, "_target_: missing"),
    ({"_target_": "NoDots"}, "expected a dotted import path"),
    ({"_target_": 12}, "expected a dotted import path"),
    ({"_target_": "maze.core.nothing.Nope"}, "cannot import 'maze.core.nothing.Nope'"),
    ({"_target_": "maze_engine.NotAClass"}, "cannot import"),
    ({"_target_": "no_such_package.Thing"}, "cannot import"),
    ({"_target_": PATH}, "rejected its arguments"),
    ({"_target_": PATH, "x": 1, "w": 2}, "rejected its arguments ['w', 'x']"),
])
def test_config_errors(config, message):
    with pytest.raises(ConfigError) as error:
        instantiate(config)
    assert message in str(error.value)


def test_expected_type_is_checked():
    with pytest.raises(ConfigError, match="built a Point, expected a StructuredPolicy"):
        instantiate({"_target_": PATH, "x": 1}, StructuredPolicy)
    with pytest.raises(ConfigError, match="expected a StructuredPolicy or a config mapping"):
        instantiate(Point(1), StructuredPolicy)


def test_type_errors_keep_their_cause():
    with pytest.raises(ConfigError) as error:
        instantiate({"_target_": f"{__name__}.Broken", "value": 1})
    assert isinstance(error.value.__cause__, TypeError)
