"""TorchPolicy: batched acting equals per-item acting, actions fit their spaces, the training-side API."""

import pickle

import numpy as np
import pytest
import torch
from gymnasium import spaces

from maze_engine import (
    ActorID,
    DictProbabilityDistribution,
    ProbabilisticPolicyComposer,
    StructuredPolicy,
    TorchPolicy,
)
from maze_engine.core.errors import ConfigError, SpaceMismatchError

OBSERVATION_SPACE = spaces.Dict({"position": spaces.Box(-5.0, 5.0, shape=(3,), dtype=np.float32),
                                 "grid": spaces.Box(0.0, 1.0, shape=(2, 2), dtype=np.float32)})
ACTION_SPACE = spaces.Dict({
    "move": spaces.Discrete(4, start=1),
    "force": spaces.Box(-0.1, 0.1, shape=(2,), dtype=np.float32),
    "switches": spaces.MultiBinary(3),
    "gears": spaces.MultiDiscrete([2, 5]),
})


def _policy(seed: int = 0) -> TorchPolicy:
    torch.manual_seed(seed)
    return ProbabilisticPolicyComposer(
        action_spaces_dict={0: ACTION_SPACE}, observation_spaces_dict={0: OBSERVATION_SPACE},
        networks=[{"_target_": "maze_engine.FlattenConcatPolicyNet", "hidden_units": [16, 16]}]).policy


def _observations(count: int) -> list[dict[str, np.ndarray]]:
    OBSERVATION_SPACE.seed(7)
    return [OBSERVATION_SPACE.sample() for _ in range(count)]


def _assert_same_actions(first: dict, second: dict) -> None:
    assert first.keys() == second.keys()
    for key in first:
        np.testing.assert_allclose(first[key], second[key], rtol=1e-5, atol=1e-6)


def test_is_a_structured_policy_whose_actions_fit_the_space() -> None:
    policy = _policy()
    assert isinstance(policy, StructuredPolicy)
    for deterministic in (False, True):
        for action in policy.compute_actions(_observations(20), deterministic=deterministic):
            assert ACTION_SPACE.contains(action), action
    action = policy.compute_action(_observations(1)[0])
    assert isinstance(action["move"], np.int64)
    assert action["force"].dtype == np.float32 and action["switches"].dtype == np.int8


def test_compute_actions_equals_per_item_compute_action() -> None:
    policy = _policy()
    observations = _observations(33)
    batched = policy.compute_actions(observations, ActorID(0, 0), deterministic=True)
    assert len(batched) == 33
    for observation, action in zip(observations, batched, strict=True):
        _assert_same_actions(policy.compute_action(observation, ActorID(0, 0), deterministic=True), action)
    assert policy.compute_actions([]) == []


def test_seeded_sampling_is_reproducible() -> None:
    policy = _policy()
    observations = _observations(10)
    policy.seed(42)
    first = policy.compute_actions(observations)
    policy.seed(42)
    second = policy.compute_actions(observations)
    for a, b in zip(first, second, strict=True):
        _assert_same_actions(a, b)


def test_gaussian_samples_are_clipped_to_the_box() -> None:
    policy = _policy()
    forces = np.stack([action["force"] for action in policy.compute_actions(_observations(200))])
    assert forces.min() >= -0.1 and forces.max() <= 0.1
    assert np.any(np.isclose(np.abs(forces), 0.1))  # unit-scale noise exceeds the small bounds


def test_actions_to_numpy_fits_raw_samples_into_the_space() -> None:
    policy = _policy()
    observations = _observations(64)
    tensors = {key: torch.as_tensor(np.stack([o[key] for o in observations])) for key in OBSERVATION_SPACE}
    raw = policy.distribution(tensors).sample()
    actions = policy.actions_to_numpy(raw)
    assert actions["force"].shape == (64, 2) and np.abs(actions["force"]).max() <= 0.1
    for index in range(64):
        assert ACTION_SPACE.contains({key: value[index] for key, value in actions.items()})


def test_training_api() -> None:
    policy = _policy()
    observations = _observations(8)
    tensors = {key: torch.as_tensor(np.stack([o[key] for o in observations])) for key in OBSERVATION_SPACE}
    logits = policy.compute_logits_dict(tensors)
    assert logits["move"].shape == (8, 4) and logits["force"].shape == (8, 4)
    distribution = policy.distribution(tensors, ActorID(0, 0))
    assert isinstance(distribution, DictProbabilityDistribution)
    actions = distribution.sample()
    loss = -(distribution.log_prob(actions).mean() + 0.01 * distribution.entropy().mean())
    loss.backward()
    assert all(parameter.grad is not None for parameter in policy.parameters())
    assert policy.to("cpu") is policy and policy.device == torch.device("cpu")
    assert policy.eval().networks.training is False
    assert policy.train().networks.training is True
    copy = _policy(seed=1)
    copy.load_state_dict(policy.state_dict())
    for key, value in policy.state_dict().items():
        torch.testing.assert_close(copy.state_dict()[key], value)


def test_observation_mistakes_are_named() -> None:
    policy = _policy()
    observation = _observations(1)[0]
    with pytest.raises(SpaceMismatchError, match="observation.grid"):
        policy.compute_action({"position": observation["position"]})
    with pytest.raises(SpaceMismatchError, match=r"observation.position: expected shape \(3,\)"):
        policy.compute_action({**observation, "position": np.zeros(4)})
    with pytest.raises(SpaceMismatchError, match="observation.position"):
        policy.compute_actions([observation, {**observation, "position": np.zeros(2)}])
    with pytest.raises(ConfigError, match="actor_id.step_key"):
        policy.compute_action(observation, ActorID(1, 0))


def test_policy_pickles_for_subprocess_rollouts() -> None:
    policy = _policy()
    policy.seed(11)
    copy = pickle.loads(pickle.dumps(policy))
    observations = _observations(16)
    policy.seed(11)
    for a, b in zip(policy.compute_actions(observations), copy.compute_actions(observations), strict=True):
        _assert_same_actions(a, b)


def test_extra_observation_keys_are_ignored() -> None:
    policy = _policy()
    observation = {**_observations(1)[0], "debug": "text that is not a number"}
    assert ACTION_SPACE.contains(policy.compute_action(observation, deterministic=True))


@pytest.mark.parametrize("deterministic", [False, True])
def test_log_probs_out_are_the_distribution_log_probs_of_the_actions(deterministic: bool) -> None:
    policy = _policy()
    observations = _observations(9)
    policy.seed(3)
    log_probs: list[float | None] = []
    actions = policy.compute_actions(observations, deterministic=deterministic, log_probs_out=log_probs)
    policy.seed(3)
    assert [a["move"] for a in policy.compute_actions(observations, deterministic=deterministic)] == \
        [a["move"] for a in actions]
    assert len(log_probs) == 9 and all(isinstance(value, float) for value in log_probs)
    obs = {key: torch.as_tensor(np.stack([o[key] for o in observations])) for key in OBSERVATION_SPACE.spaces}
    with torch.no_grad():
        distribution = policy.distribution(obs)
        # Box samples are clipped after the log-probability was taken: compare the discrete keys only.
        expected = sum(distribution[key].log_prob(torch.as_tensor(np.stack([a[key] for a in actions])))
                       for key in ("move", "switches", "gears"))
        force = distribution["force"].log_prob(torch.as_tensor(np.stack([a["force"] for a in actions])))
    differing = np.abs(np.array(log_probs) - (expected + force).numpy())
    unclipped = [bool(np.all(np.abs(a["force"]) < 0.1)) for a in actions]
    assert np.all(differing[unclipped] < 1e-4)


def test_random_policy_log_probs() -> None:
    from maze_engine import RandomPolicy
    from maze_engine.policies.random_policy import uniform_log_prob

    assert uniform_log_prob(spaces.Discrete(4)) == pytest.approx(-np.log(4))
    assert uniform_log_prob(spaces.MultiDiscrete([2, 5])) == pytest.approx(-np.log(10))
    assert uniform_log_prob(spaces.MultiBinary(3)) == pytest.approx(-3 * np.log(2))
    assert uniform_log_prob(spaces.Box(-0.1, 0.1, shape=(2,))) == pytest.approx(-2 * np.log(0.2), rel=1e-5)
    assert uniform_log_prob(spaces.Box(-np.inf, 1.0, shape=(2,))) is None
    expected = -np.log(4) - 2 * np.log(0.2) - 3 * np.log(2) - np.log(10)
    log_probs: list[float | None] = []
    RandomPolicy({0: ACTION_SPACE}, seed=0).compute_actions(_observations(2), log_probs_out=log_probs)
    assert log_probs == [pytest.approx(expected, rel=1e-5)] * 2
