"""Fitted Q evaluation (FQE): a candidate's action values learnt from logged transitions (discrete actions).

A small torch MLP maps the policy observation (its keys flattened, concatenated and standardized; with
``time_feature`` also the step index over the longest episode) to one value per joint action, and learns

    Q(s_t, a_t) <- r_t + gamma * sum_a pi_e(a | s_{t+1}) Q'(s_{t+1}, a)        (r_t alone at an episode's end)

by minibatch regression, where ``Q'`` is a copy of the net refreshed every ``target_update_every`` steps
(values propagate one step back per refresh), cross-fitted: each episode's values come from a net that
never saw it. An episode's return ends with its last logged step, as in the importance-sampling
estimators, so nothing is bootstrapped past it. The doubly robust estimator uses
``Q(s_t, a_t)`` and ``V(s_t) = sum_a pi_e(a | s_t) Q(s_t, a)``.
"""

import itertools
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
from gymnasium import spaces

from maze_engine.core.errors import ConfigError
from maze_engine.evaluation.candidate import Candidate
from maze_engine.evaluation.data import LoggedEpisodes, OffPolicyEvaluationError

MAX_JOINT_ACTIONS = 256
"""Joint actions FQE enumerates at most (its net has one output per joint action)."""


@dataclass(frozen=True)
class FQEConfig:
    """How the Q-function of the doubly robust estimator is fitted."""

    hidden_units: tuple[int, ...] = (64, 64)
    """Tanh layers of the MLP."""
    steps: int = 10_000
    """Gradient steps of each fold's net."""
    batch_size: int = 256
    """Transitions per gradient step."""
    lr: float = 1e-3
    """Adam learning rate."""
    target_update_every: int = 25
    """Gradient steps between refreshes of the bootstrap net: fewer propagate values faster, less stably."""
    folds: int = 2
    """Cross-fitting: each episode's values come from a net fitted on the other folds' episodes (1: one net
    fitted on, and evaluated on, every episode)."""
    time_feature: bool = False
    """Add the step index as an input: for returns cut by a time limit the observation does not show."""
    seed: int = 0
    """Seeds the net's initial weights and the minibatches."""

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size", "target_update_every", "folds"):
            if int(getattr(self, name)) < 1:
                raise ConfigError(f"fqe.{name}: expected a positive integer, got {getattr(self, name)}")
        if not self.lr > 0:
            raise ConfigError(f"fqe.lr: expected a positive number, got {self.lr}")
        if not self.hidden_units or min(self.hidden_units) < 1:
            raise ConfigError(f"fqe.hidden_units: expected positive layer sizes, got {self.hidden_units}")


class DiscreteActions:
    """Every joint action of a Dict of Discrete and MultiDiscrete spaces, numbered ``0 .. count - 1``.

    >>> table = DiscreteActions(spaces.Dict({"a": spaces.Discrete(2), "b": spaces.Discrete(3, start=1)}))
    >>> table.count, table.index({"a": np.array([1]), "b": np.array([3])}).tolist()
    (6, [5])
    >>> [action["b"].tolist() for action in table.table(repeat=1)]
    [[1], [2], [3], [1], [2], [3]]
    """

    def __init__(self, space: spaces.Space) -> None:
        if not isinstance(space, spaces.Dict):
            raise ConfigError(f"action_space: expected a Dict space (the policy's), got {space}")
        self.keys = list(space.spaces)
        self._scalar = {key: isinstance(sub, spaces.Discrete) for key, sub in space.spaces.items()}
        self.digits: list[tuple[str, int | None, int, int]] = []  # key, column, start, size
        for key, sub in space.spaces.items():
            if isinstance(sub, spaces.Discrete):
                self.digits.append((key, None, int(sub.start), int(sub.n)))
            elif isinstance(sub, spaces.MultiDiscrete) and sub.nvec.ndim == 1:
                starts = np.zeros_like(sub.nvec) if sub.start is None else sub.start
                self.digits += [(key, column, int(starts[column]), int(size))
                                for column, size in enumerate(sub.nvec)]
            else:
                raise ConfigError(f"action_space.{key}: fitted Q evaluation (the doubly robust estimate) "
                                  f"needs discrete actions (Discrete, MultiDiscrete), got {sub}; use the "
                                  "weighted importance sampling estimate alone (methods=('wis',))")
        self.count = math.prod(size for *_, size in self.digits)
        if self.count > MAX_JOINT_ACTIONS:
            raise ConfigError(f"action_space: {self.count} joint actions; fitted Q evaluation enumerates at "
                              f"most {MAX_JOINT_ACTIONS}")

    def table(self, repeat: int) -> list[dict[str, np.ndarray]]:
        """For each joint action, that action ``repeat`` times, as a dict of arrays."""
        widths = {key: sum(digit[0] == key for digit in self.digits) for key in self.keys}
        result = []
        for values in itertools.product(*(range(start, start + size) for _, _, start, size in self.digits)):
            action = {key: np.zeros((repeat, widths[key]), dtype=np.int64) for key in self.keys}
            for (key, column, _, _), value in zip(self.digits, values, strict=True):
                action[key][:, column or 0] = value
            result.append({key: array[:, 0] if self._scalar[key] else array for key, array in action.items()})
        return result

    def index(self, actions: Mapping[str, Any]) -> np.ndarray:
        """The joint action number of each logged action; OffPolicyEvaluationError for one outside."""
        index: np.ndarray | None = None
        for key, column, start, size in self.digits:
            values = np.asarray(actions[key])
            digit = (values if column is None else values[:, column]).astype(np.int64) - start
            if ((digit < 0) | (digit >= size)).any():
                raise OffPolicyEvaluationError(f"actions.{key}: logged actions outside the action space "
                                               f"({start} .. {start + size - 1})")
            index = digit if index is None else index * size + digit
        assert index is not None
        return index


class QEstimates(NamedTuple):
    """What the doubly robust estimator needs of a fitted Q-function, per logged step."""

    taken: np.ndarray
    """``Q(s_t, a_t)`` of the logged action."""
    state_values: np.ndarray
    """``V(s_t) = sum_a pi_e(a | s_t) Q(s_t, a)``."""


def action_probabilities(candidate: Candidate, observations: Mapping[str, Any], actions: DiscreteActions,
                         steps: int) -> np.ndarray:
    """``(steps, count)``: the candidate's probability of every joint action in every observation."""
    columns = [np.exp(candidate.log_probs(observations, action)) for action in actions.table(steps)]
    probabilities = np.stack(columns, axis=1)
    totals = probabilities.sum(axis=1)
    if not np.allclose(totals, 1.0, atol=1e-3):
        worst = int(np.argmax(np.abs(totals - 1.0)))
        raise OffPolicyEvaluationError(f"candidate: its probabilities over the {actions.count} joint actions "
                                       f"sum to {totals[worst]:.4g} at step {worst}, not 1")
    return probabilities


def features(data: LoggedEpisodes, time_feature: bool) -> np.ndarray:
    """The FQE input: observation keys flattened and concatenated (sorted keys), standardized."""
    parts = [np.asarray(data.observations[key], dtype=np.float64).reshape(data.n_steps, -1)
             for key in sorted(data.observations)]
    if time_feature:
        parts.append((data.step_in_episode / max(int(data.lengths.max()), 1))[:, None])
    matrix = np.concatenate(parts, axis=1)
    scale = matrix.std(axis=0)
    return ((matrix - matrix.mean(axis=0)) / np.where(scale > 1e-8, scale, 1.0)).astype(np.float32)


class _Transitions(NamedTuple):
    """Every logged step as a regression sample, tensors scaled for the net."""

    inputs: Any
    rewards: Any
    taken: Any
    following: Any
    """The index of the next step of the same episode (itself at an episode's last step)."""
    continues: Any
    """0 at an episode's last step: nothing is bootstrapped past it."""
    next_probabilities: Any


def fit_q_function(data: LoggedEpisodes, candidate: Candidate, action_space: spaces.Space, gamma: float,
                   config: FQEConfig = FQEConfig()) -> QEstimates:
    """Fit the candidate's Q-function on ``data`` (see the module docstring) and evaluate it on every step.

    With ``config.folds`` > 1 the episodes are split into that many folds and each fold's values come from a
    net fitted on the other folds (cross-fitting): a net evaluated on the transitions it was fitted to makes
    the doubly robust corrections vanish and the interval look narrower than it is.
    """
    import torch

    actions = DiscreteActions(action_space)
    taken = actions.index(data.actions)
    probabilities = action_probabilities(candidate, data.observations, actions, data.n_steps)
    longest = float(data.lengths.max())
    horizon = longest if gamma >= 1.0 else min(1.0 / (1.0 - gamma), longest)
    value_scale = max(float(np.abs(data.rewards).max()) * horizon, 1e-8)  # the net learns Q / value_scale
    following = np.minimum(np.arange(data.n_steps) + 1, data.n_steps - 1)
    transitions = _Transitions(
        inputs=torch.from_numpy(features(data, config.time_feature)),
        rewards=torch.from_numpy(data.rewards / value_scale).float(), taken=torch.from_numpy(taken),
        following=torch.from_numpy(following),
        continues=torch.from_numpy((~data.last_step).astype(np.float32)),
        next_probabilities=torch.from_numpy(probabilities[following]).float())
    folds = min(config.folds, data.n_episodes)
    fold_of_episode = np.random.default_rng(config.seed).permutation(data.n_episodes) % folds
    fold_of_step = fold_of_episode[data.episode_of_step]
    q_values = np.empty((data.n_steps, actions.count))
    for fold in range(folds):
        held_out = fold_of_step == fold
        fitted_on = np.flatnonzero(~held_out if folds > 1 else held_out)
        net = _fit(transitions, torch.from_numpy(fitted_on), actions.count, gamma, config, config.seed + fold)
        with torch.no_grad():
            chunks = transitions.inputs[torch.from_numpy(held_out)].split(65536)
            q_values[held_out] = torch.cat([net(chunk) for chunk in chunks]).double().numpy() * value_scale
    return QEstimates(q_values[np.arange(data.n_steps), taken], (probabilities * q_values).sum(axis=1))


def _fit(transitions: _Transitions, steps: Any, outputs: int, gamma: float, config: FQEConfig,
         seed: int) -> Any:
    """A net fitted to the transitions at ``steps`` (a tensor of step indices)."""
    import torch
    from torch import nn

    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    width = transitions.inputs.shape[1]
    net, bootstrap = _mlp(width, config.hidden_units, outputs), _mlp(width, config.hidden_units, outputs)
    bootstrap.load_state_dict(net.state_dict())
    optimizer = torch.optim.Adam(net.parameters(), lr=config.lr)
    for step in range(config.steps):
        batch = steps[torch.randint(len(steps), (config.batch_size,), generator=generator)]
        with torch.no_grad():
            later = transitions.following[batch]
            next_value = (transitions.next_probabilities[batch] * bootstrap(transitions.inputs[later])).sum(1)
            target = transitions.rewards[batch] + gamma * transitions.continues[batch] * next_value
        predicted = net(transitions.inputs[batch]).gather(1, transitions.taken[batch, None]).squeeze(1)
        loss = nn.functional.mse_loss(predicted, target)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if (step + 1) % config.target_update_every == 0:
            bootstrap.load_state_dict(net.state_dict())
    return net


def _mlp(inputs: int, hidden_units: tuple[int, ...], outputs: int) -> Any:
    from torch import nn

    layers: list[nn.Module] = []
    width = inputs
    for units in hidden_units:
        layers += [nn.Linear(width, units), nn.Tanh()]
        width = units
    layers.append(nn.Linear(width, outputs))
    return nn.Sequential(*layers)
