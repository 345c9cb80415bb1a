"""DistributionMapper: defaults per space type, overrides per type and per action key, config errors."""

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium import spaces

from maze_engine import (
    BernoulliProbabilityDistribution,
    CategoricalProbabilityDistribution,
    DiagonalGaussianProbabilityDistribution,
    DictProbabilityDistribution,
    DistributionMapper,
    MultiCategoricalProbabilityDistribution,
    SquashedGaussianProbabilityDistribution,
)
from maze_engine.core.errors import ConfigError, SpaceMismatchError

ACTION_SPACE = spaces.Dict({
    "discrete": spaces.Discrete(3),
    "box": spaces.Box(-1.0, 1.0, shape=(2,)),
    "binary": spaces.MultiBinary(4),
    "multi": spaces.MultiDiscrete([2, 3]),
    "nested": spaces.Dict({"inner": spaces.Discrete(2), "steer": spaces.Box(-1.0, 1.0, shape=(1,))}),
})

GAUSSIAN = DiagonalGaussianProbabilityDistribution


@pytest.mark.parametrize("config", [None, {}, []])
def test_defaults_per_space_type(config: object) -> None:
    mapper = DistributionMapper(ACTION_SPACE, config)
    assert mapper.distribution_class("discrete") is CategoricalProbabilityDistribution
    assert mapper.distribution_class("box") is DiagonalGaussianProbabilityDistribution
    assert mapper.distribution_class("binary") is BernoulliProbabilityDistribution
    assert mapper.distribution_class("multi") is MultiCategoricalProbabilityDistribution
    assert mapper.distribution_class("nested.inner") is CategoricalProbabilityDistribution
    assert mapper.required_logits_shapes() == {
        "discrete": (3,), "box": (4,), "binary": (4,), "multi": (5,),
        "nested": {"inner": (2,), "steer": (2,)}}


def test_logits_dict_to_distribution_builds_nested_dict_distribution() -> None:
    mapper = DistributionMapper(ACTION_SPACE, [])
    logits = {"discrete": torch.zeros(2, 3), "box": torch.zeros(2, 4), "binary": torch.zeros(2, 4),
              "multi": torch.zeros(2, 5), "nested": {"inner": torch.zeros(2, 2), "steer": torch.zeros(2, 2)}}
    distribution = mapper.logits_dict_to_distribution(logits, temperature=0.5)
    assert isinstance(distribution["nested"], DictProbabilityDistribution)
    actions = distribution.sample()
    assert actions["nested"]["inner"].shape == (2,)
    assert distribution.log_prob(actions).shape == (2,)
    assert distribution.entropy().shape == (2,)
    del logits["multi"]
    with pytest.raises(SpaceMismatchError, match="logits.multi"):
        mapper.logits_dict_to_distribution(logits)


@pytest.mark.parametrize("space_entry", [gym.spaces.Box, "gym.spaces.Box", "gymnasium.spaces.Box", "Box"])
def test_override_per_space_type(space_entry: object) -> None:
    mapper = DistributionMapper(ACTION_SPACE, [{"action_space": space_entry,
                                                "distribution": SquashedGaussianProbabilityDistribution}])
    assert mapper.distribution_class("box") is SquashedGaussianProbabilityDistribution
    assert mapper.distribution_class("nested.steer") is SquashedGaussianProbabilityDistribution
    assert mapper.distribution_class("discrete") is CategoricalProbabilityDistribution


def test_override_per_action_key_wins_over_space_type() -> None:
    mapper = DistributionMapper(ACTION_SPACE, [
        {"action_head": "box", "distribution": "maze_engine.DiagonalGaussianProbabilityDistribution"},
        {"action_space": spaces.Box, "distribution": "maze_engine.SquashedGaussianProbabilityDistribution"},
        {"action_head": "nested.steer", "distribution": DiagonalGaussianProbabilityDistribution},
    ])
    assert mapper.distribution_class("box") is DiagonalGaussianProbabilityDistribution
    assert mapper.distribution_class("nested.steer") is DiagonalGaussianProbabilityDistribution


def test_seed_004_list_format_with_maze_paths() -> None:
    """The seed's exact entry: a gym space class and a ``maze.distributions...`` path."""
    action_space = spaces.Dict({"action": spaces.Discrete(2)})
    mapper = DistributionMapper(
        action_space=action_space,
        distribution_mapper_config=[{
            "action_space": gym.spaces.Discrete,
            "distribution": "maze.distributions.categorical.CategoricalProbabilityDistribution"}])
    assert mapper.distribution_class("action") is CategoricalProbabilityDistribution
    assert mapper.required_logits_shape("action") == (2,)


@pytest.mark.parametrize(("config", "message"), [
    ("oops", "expected a list"),
    ([{"action_space": spaces.Box}], "'distribution' key"),
    ([{"action_space": spaces.Box, "action_head": "box", "distribution": GAUSSIAN}], "exactly one of"),
    ([{"action_head": "missing", "distribution": GAUSSIAN}], "'missing' is not"),
    ([{"action_space": "not.a.Space", "distribution": GAUSSIAN}], "space class"),
    ([{"action_space": spaces.Box, "distribution": "torch.nn.Linear"}], "ProbabilityDistribution class"),
    ([{"action_head": "discrete", "distribution": GAUSSIAN}],
     r"action_space.discrete: .*models Box"),
    ([{"action_space": spaces.Box, "distribution": SquashedGaussianProbabilityDistribution, "extra": 1}],
     "unexpected key 'extra'"),
])
def test_config_mistakes_are_named(config: object, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        DistributionMapper(ACTION_SPACE, config)


def test_squashed_default_for_unbounded_box_is_rejected_at_construction() -> None:
    space = spaces.Dict({"a": spaces.Box(-np.inf, np.inf, shape=(2,))})
    with pytest.raises(ConfigError, match="action_space.a: .*finite Box bounds"):
        DistributionMapper(space, [{"action_space": "Box",
                                    "distribution": SquashedGaussianProbabilityDistribution}])


def test_non_dict_action_space_and_unknown_key() -> None:
    with pytest.raises(ConfigError, match="Dict space"):
        DistributionMapper(spaces.Discrete(2), [])
    with pytest.raises(ConfigError, match="'nope' is not an action key"):
        DistributionMapper(ACTION_SPACE, []).required_logits_shape("nope")
