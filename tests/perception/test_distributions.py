"""Each action distribution against torch.distributions computed by hand on the same logits."""

import numpy as np
import pytest
import torch
from gymnasium import spaces
from torch import distributions as td

from maze_engine import (
    BernoulliProbabilityDistribution,
    CategoricalProbabilityDistribution,
    DiagonalGaussianProbabilityDistribution,
    DictProbabilityDistribution,
    MultiCategoricalProbabilityDistribution,
    ProbabilityDistribution,
    SquashedGaussianProbabilityDistribution,
)
from maze_engine.core.errors import ConfigError, SpaceMismatchError

BATCH = (3, 5)


def _logits(distribution: type[ProbabilityDistribution], space: spaces.Space, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(BATCH + distribution.required_logits_shape(space), generator=generator)


@pytest.mark.parametrize("start", [0, 2])
def test_categorical_matches_torch(start: int) -> None:
    space = spaces.Discrete(4, start=start)
    logits = _logits(CategoricalProbabilityDistribution, space)
    dist = CategoricalProbabilityDistribution(logits, space)
    reference = td.Categorical(logits=logits)
    actions = dist.sample(torch.Generator().manual_seed(1))
    assert actions.shape == BATCH and actions.dtype == torch.long
    assert bool(((actions >= start) & (actions < start + 4)).all())
    torch.testing.assert_close(dist.log_prob(actions), reference.log_prob(actions - start))
    torch.testing.assert_close(dist.entropy(), reference.entropy())
    torch.testing.assert_close(dist.deterministic_sample(), logits.argmax(-1) + start)


def test_categorical_sampling_frequencies_follow_probabilities() -> None:
    space = spaces.Discrete(3)
    logits = torch.log(torch.tensor([[0.2, 0.5, 0.3]])).expand(20000, 3)
    samples = CategoricalProbabilityDistribution(logits, space).sample(torch.Generator().manual_seed(0))
    frequencies = torch.bincount(samples, minlength=3).float() / samples.numel()
    torch.testing.assert_close(frequencies, torch.tensor([0.2, 0.5, 0.3]), atol=0.015, rtol=0)


def test_categorical_temperature_divides_logits() -> None:
    space = spaces.Discrete(3)
    logits = _logits(CategoricalProbabilityDistribution, space)
    hot = CategoricalProbabilityDistribution(logits, space, temperature=2.0)
    torch.testing.assert_close(hot.entropy(), td.Categorical(logits=logits / 2.0).entropy())


def test_categorical_entropy_with_masked_logits_is_finite() -> None:
    space = spaces.Discrete(3)
    logits = torch.tensor([[0.0, float("-inf"), 1.0]])
    entropy = CategoricalProbabilityDistribution(logits, space).entropy()
    assert torch.isfinite(entropy).all()


def test_multi_categorical_is_a_sum_of_categoricals() -> None:
    space = spaces.MultiDiscrete([3, 2, 4], start=[1, 0, 0])
    logits = _logits(MultiCategoricalProbabilityDistribution, space)
    dist = MultiCategoricalProbabilityDistribution(logits, space)
    parts = [td.Categorical(logits=chunk) for chunk in torch.split(logits, [3, 2, 4], dim=-1)]
    actions = dist.sample()
    assert actions.shape == BATCH + (3,)
    start = torch.tensor([1, 0, 0])
    expected = sum(part.log_prob(actions[..., i] - start[i]) for i, part in enumerate(parts))
    torch.testing.assert_close(dist.log_prob(actions), expected)
    torch.testing.assert_close(dist.entropy(), sum(part.entropy() for part in parts))
    deterministic = dist.deterministic_sample()
    assert deterministic[..., 0].tolist() == (logits[..., :3].argmax(-1) + 1).tolist()


def test_bernoulli_matches_torch() -> None:
    space = spaces.MultiBinary([2, 3])
    logits = _logits(BernoulliProbabilityDistribution, space)
    dist = BernoulliProbabilityDistribution(logits, space)
    reference = td.Bernoulli(logits=logits)
    actions = dist.sample(torch.Generator().manual_seed(3))
    assert actions.shape == BATCH + (2, 3)
    assert set(actions.unique().tolist()) <= {0.0, 1.0}
    torch.testing.assert_close(dist.log_prob(actions), reference.log_prob(actions).sum(dim=(-2, -1)))
    torch.testing.assert_close(dist.entropy(), reference.entropy().sum(dim=(-2, -1)))
    torch.testing.assert_close(dist.deterministic_sample(), (logits > 0).float())


def test_diagonal_gaussian_matches_torch() -> None:
    space = spaces.Box(-1.0, 1.0, shape=(2,))
    logits = _logits(DiagonalGaussianProbabilityDistribution, space)
    dist = DiagonalGaussianProbabilityDistribution(logits, space)
    mean, log_std = logits.chunk(2, dim=-1)
    reference = td.Normal(mean, log_std.exp())
    actions = dist.sample()
    assert actions.shape == BATCH + (2,)
    torch.testing.assert_close(dist.log_prob(actions), reference.log_prob(actions).sum(-1))
    torch.testing.assert_close(dist.entropy(), reference.entropy().sum(-1))
    torch.testing.assert_close(dist.deterministic_sample(), mean)


def test_diagonal_gaussian_temperature_scales_std() -> None:
    space = spaces.Box(-1.0, 1.0, shape=(2,))
    logits = torch.zeros(1, 4)
    dist = DiagonalGaussianProbabilityDistribution(logits, space, temperature=0.5)
    torch.testing.assert_close(dist.std, torch.full((1, 2), 0.5))


def test_squashed_gaussian_stays_in_bounds_and_matches_transformed_normal() -> None:
    space = spaces.Box(low=np.array([-2.0, 0.0], dtype=np.float32),
                       high=np.array([2.0, 10.0], dtype=np.float32))
    logits = _logits(SquashedGaussianProbabilityDistribution, space) * 3.0
    dist = SquashedGaussianProbabilityDistribution(logits, space)
    samples = dist.sample(torch.Generator().manual_seed(0))
    low, high = torch.tensor([-2.0, 0.0]), torch.tensor([2.0, 10.0])
    assert bool(((samples >= low) & (samples <= high)).all())
    mean, log_std = logits.chunk(2, dim=-1)
    log_std = log_std.clamp(-20, 2)
    center, half = (high + low) / 2, (high - low) / 2
    reference = td.TransformedDistribution(td.Normal(mean, log_std.exp()),
                                           [td.TanhTransform(), td.AffineTransform(center, half)])
    inner = torch.tensor([[0.3, -0.7]]).expand(BATCH + (2,))
    actions = center + half * torch.tanh(inner)
    torch.testing.assert_close(dist.log_prob(actions), reference.log_prob(actions).sum(-1),
                               atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(dist.deterministic_sample(), center + half * torch.tanh(mean))
    for bound in (low, high):  # actions exactly on the bounds (clipped samples) keep a finite log-probability
        assert torch.isfinite(dist.log_prob(bound.expand(BATCH + (2,)))).all()
    assert dist.entropy().shape == BATCH


def test_squashed_gaussian_rejects_unbounded_box() -> None:
    with pytest.raises(ConfigError, match="finite Box bounds"):
        SquashedGaussianProbabilityDistribution.required_logits_shape(spaces.Box(-np.inf, np.inf, shape=(2,)))


def test_dict_distribution_sums_over_keys() -> None:
    discrete, box = spaces.Discrete(3), spaces.Box(-1.0, 1.0, shape=(2,))
    parts = {"a": CategoricalProbabilityDistribution(
                 _logits(CategoricalProbabilityDistribution, discrete), discrete),
             "b": DiagonalGaussianProbabilityDistribution(
                 _logits(DiagonalGaussianProbabilityDistribution, box, seed=1), box)}
    dist = DictProbabilityDistribution(parts)
    actions = dist.sample()
    assert set(actions) == {"a", "b"}
    torch.testing.assert_close(dist.log_prob(actions), parts["a"].log_prob(actions["a"]) +
                               parts["b"].log_prob(actions["b"]))
    torch.testing.assert_close(dist.entropy(), parts["a"].entropy() + parts["b"].entropy())
    assert set(dist.deterministic_sample()) == {"a", "b"}
    with pytest.raises(SpaceMismatchError, match="actions.b"):
        dist.log_prob({"a": actions["a"]})


@pytest.mark.parametrize(("distribution", "space"), [
    (CategoricalProbabilityDistribution, spaces.Box(-1, 1, shape=(2,))),
    (BernoulliProbabilityDistribution, spaces.Discrete(2)),
    (MultiCategoricalProbabilityDistribution, spaces.MultiBinary(2)),
    (DiagonalGaussianProbabilityDistribution, spaces.Discrete(2)),
])
def test_distribution_rejects_foreign_space(distribution: type[ProbabilityDistribution],
                                            space: spaces.Space) -> None:
    with pytest.raises(ConfigError, match=distribution.__name__):
        distribution.required_logits_shape(space)


def test_wrong_logits_shape_and_temperature_are_named() -> None:
    space = spaces.Discrete(3)
    with pytest.raises(ConfigError, match=r"logits: .*shape \(3,\)"):
        CategoricalProbabilityDistribution(torch.zeros(2, 4), space)
    with pytest.raises(ConfigError, match="temperature"):
        CategoricalProbabilityDistribution(torch.zeros(2, 3), space, temperature=0.0)
