"""Policy and critic composers: networks as lists, dicts, instances and configs; multi-step, multi-agent."""

import numpy as np
import pytest
import torch
from gymnasium import spaces
from torch import nn

from maze_engine import (
    ActorID,
    DistributionMapper,
    FlattenConcatPolicyNet,
    FlattenConcatStateValueNet,
    ProbabilisticPolicyComposer,
    SharedStateCriticComposer,
    SquashedGaussianProbabilityDistribution,
    StateCriticComposer,
    TorchPolicy,
)
from maze_engine.core.errors import ConfigError

ACTION_SPACES = {0: spaces.Dict({"choice": spaces.Discrete(3)}),
                 "place": spaces.Dict({"where": spaces.Box(-1.0, 1.0, shape=(2,), dtype=np.float32)})}
OBSERVATION_SPACES = {0: spaces.Dict({"state": spaces.Box(-1.0, 1.0, shape=(3,), dtype=np.float32)}),
                      "place": spaces.Dict({"state": spaces.Box(-1.0, 1.0, shape=(3,), dtype=np.float32),
                                            "choice": spaces.Discrete(3)})}
AGENT_COUNTS = {0: 1, "place": 2}
POLICY_NET = {"_target_": "maze_engine.FlattenConcatPolicyNet", "hidden_units": [8], "non_lin": "tanh"}
VALUE_NET = {"_target_": "maze_engine.FlattenConcatStateValueNet", "hidden_units": [8], "non_lin": "tanh"}


def _observation(step: int | str) -> dict[str, np.ndarray]:
    return {key: np.asarray(space.sample(), dtype=np.float32)
            for key, space in OBSERVATION_SPACES[step].items()}


def _composer(networks: object, **kwargs: object) -> ProbabilisticPolicyComposer:
    arguments = {"action_spaces_dict": ACTION_SPACES, "observation_spaces_dict": OBSERVATION_SPACES,
                 "distribution_mapper": None, "networks": networks, "substeps_with_separate_agent_nets": [],
                 "agent_counts_dict": AGENT_COUNTS, **kwargs}
    return ProbabilisticPolicyComposer(**arguments)


def _instance_nets() -> list[nn.Module]:
    return [FlattenConcatPolicyNet({"state": (3,)}, {"choice": (3,)}, [8]),
            FlattenConcatPolicyNet({"state": (3,), "choice": ()}, {"where": (4,)}, [8])]


@pytest.mark.parametrize("networks", [
    [POLICY_NET, POLICY_NET],
    [POLICY_NET],
    POLICY_NET,
    {0: POLICY_NET, "place": POLICY_NET},
    {"0": POLICY_NET, "place": "maze_engine.FlattenConcatPolicyNet"},
    "instances-list",
    "instances-dict",
], ids=["config-list", "one-config-for-all", "single-config", "dict", "yaml-keys-and-class-path", "instances",
        "instances-dict"])
def test_policy_composer_accepts_network_forms(networks: object) -> None:
    if networks == "instances-list":
        networks = _instance_nets()
    elif networks == "instances-dict":
        first, second = _instance_nets()
        networks = {"place": second, 0: first}
    policy = _composer(networks).policy
    assert isinstance(policy, TorchPolicy)
    action = policy.compute_action(_observation(0), ActorID(0, 0))
    assert ACTION_SPACES[0].contains(action)
    action = policy.compute_action(_observation("place"), ActorID("place", 1))
    assert ACTION_SPACES["place"].contains(action)


def test_distribution_mapper_forms() -> None:
    squashed = [{"action_space": spaces.Box, "distribution": SquashedGaussianProbabilityDistribution}]
    by_instance = _composer(POLICY_NET, distribution_mapper=DistributionMapper(ACTION_SPACES[0], squashed))
    by_config = _composer(POLICY_NET, distribution_mapper={"distribution_mapper_config": squashed})
    by_target = _composer(POLICY_NET, distribution_mapper={"_target_": "maze_engine.DistributionMapper",
                                                           "distribution_mapper_config": squashed})
    by_list = _composer(POLICY_NET, distribution_mapper=squashed)
    for composer in (by_instance, by_config, by_target, by_list):
        assert composer.distribution_mappers["place"].distribution_class("where") \
            is SquashedGaussianProbabilityDistribution
    assert by_instance.distribution_mapper.action_space == ACTION_SPACES[0]


def test_separate_agent_nets() -> None:
    composer = _composer([POLICY_NET, POLICY_NET], substeps_with_separate_agent_nets=["place"])
    policy = composer.policy
    assert sorted(policy.networks) == ["0", "place_agent0", "place_agent1"]
    assert policy.network(ActorID("place", 0)) is not policy.network(ActorID("place", 1))
    first, second = _instance_nets()
    shared_start = _composer([first, second], substeps_with_separate_agent_nets=["place"]).policy
    nets = [shared_start.network(ActorID("place", agent)) for agent in (0, 1)]
    assert nets[0] is not nets[1]
    torch.testing.assert_close(nets[0].state_dict(), nets[1].state_dict())


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"networks": None}, "networks: expected a network"),
    ({"networks": [POLICY_NET, POLICY_NET, POLICY_NET]}, "expected 2 networks"),
    ({"networks": {0: POLICY_NET}}, "no entry for step 'place'"),
    ({"networks": [nn.Linear(3, 3), POLICY_NET]}, r"networks\[0\]: Linear failed"),
    ({"networks": [FlattenConcatPolicyNet({"state": (3,)}, {"choice": (2,)}, [4]), POLICY_NET]},
     r"logits for action 'choice' must have shape \[batch, \*\(3,\)\]"),
    ({"networks": [FlattenConcatPolicyNet({"state": (3,)}, {"other": (3,)}, [4]), POLICY_NET]},
     "no logits for action 'choice'"),
    ({"networks": POLICY_NET, "substeps_with_separate_agent_nets": ["nope"]}, "'nope' is not a step key"),
    ({"networks": [{"_target_": "maze_engine.FlattenConcatPolicyNet", "bogus": 1}, POLICY_NET]},
     r"networks\[0\]: .*rejected its arguments"),
])
def test_policy_composer_mistakes_are_named(kwargs: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        _composer(**kwargs)


class KeywordNet(nn.Module):
    """A hand-written net using the seed's ``action_logit_shapes`` keyword."""

    def __init__(self, obs_shapes: dict, action_logit_shapes: dict) -> None:
        super().__init__()
        self.linear = nn.Linear(obs_shapes["state"][0], action_logit_shapes["choice"][0])

    def forward(self, x_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {"choice": self.linear(x_dict["state"])}


def test_config_nets_get_the_logits_keyword_they_declare() -> None:
    composer = ProbabilisticPolicyComposer(
        action_spaces_dict={0: ACTION_SPACES[0]}, observation_spaces_dict={0: OBSERVATION_SPACES[0]},
        networks=[KeywordNet])
    assert isinstance(composer.policy.network(), KeywordNet)


@pytest.mark.parametrize("networks", [[VALUE_NET], {0: VALUE_NET}, VALUE_NET,
                                      FlattenConcatStateValueNet({"state": (3,)}, [8]),
                                      {0: FlattenConcatStateValueNet({"state": (3,)}, [8])}],
                         ids=["list", "dict", "single-config", "instance", "instance-dict"])
def test_shared_critic_composer_forms(networks: object) -> None:
    composer = SharedStateCriticComposer(observation_spaces_dict={0: OBSERVATION_SPACES[0]},
                                         agent_counts_dict={0: 1}, networks=networks,
                                         stack_observations=False)
    critic = composer.critic
    values = critic.predict_values({"state": torch.zeros(5, 3)})
    assert values.shape == (5,)
    assert len(list(critic.parameters())) == 4


def test_shared_critic_over_steps_needs_stacking_when_observations_differ() -> None:
    with pytest.raises(ConfigError, match="stack_observations"):
        SharedStateCriticComposer(OBSERVATION_SPACES, AGENT_COUNTS, [VALUE_NET], stack_observations=False)
    stacked = SharedStateCriticComposer(OBSERVATION_SPACES, AGENT_COUNTS, [VALUE_NET],
                                        stack_observations=True)
    assert stacked.obs_shapes == {"state": (3,), "choice": ()}
    merged = {"state": torch.zeros(2, 3), "choice": torch.zeros(2)}
    assert stacked.critic.predict_values(merged, ActorID("place", 1)).shape == (2,)


def test_state_critic_has_one_net_per_step() -> None:
    critic = StateCriticComposer(OBSERVATION_SPACES, AGENT_COUNTS, networks=[VALUE_NET, VALUE_NET]).critic
    assert sorted(critic.networks) == ["0", "place"]
    assert critic.predict_values({"state": torch.zeros(4, 3)}, ActorID(0, 0)).shape == (4,)
    place = {"state": torch.zeros(4, 3), "choice": torch.zeros(4)}
    assert critic.predict_values(place, ActorID("place", 0)).shape == (4,)
    assert isinstance(critic.predict_value(_observation("place"), ActorID("place", 0)), float)


def test_critic_mistakes_are_named() -> None:
    with pytest.raises(ConfigError, match=r"value net must return"):
        SharedStateCriticComposer({0: OBSERVATION_SPACES[0]}, networks=[_instance_nets()[0]])
    with pytest.raises(ConfigError, match="action_logits_shapes"):
        SharedStateCriticComposer({0: OBSERVATION_SPACES[0]}, networks=[POLICY_NET])
    with pytest.raises(ConfigError, match="expected 2 networks"):
        StateCriticComposer(OBSERVATION_SPACES, networks=[VALUE_NET, VALUE_NET, VALUE_NET])
