"""Algorithm configurations: one dataclass per algorithm, values in ``conf/algorithm/*.yaml``.

The field names are those of the original Maze framework (seed 004), so its configs and snippets run
unchanged. Every field is validated when the object is built; a bad value raises a ConfigError that names the
field and what it expects.
"""

import math
from dataclasses import MISSING, asdict, dataclass, fields
from typing import Any, TypeVar

from maze_engine.core.errors import ConfigError

LR_SCHEDULES = ("constant", "linear")
DEVICES = ("cpu", "cuda")


def _check(condition: bool, field_name: str, expected: str, value: Any) -> None:
    if not condition:
        raise ConfigError(f"algorithm.{field_name}: expected {expected}, got {value!r}")


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass
class AlgorithmConfig:
    """Fields shared by the on-policy algorithms (A2C and PPO)."""

    n_epochs: int = 20
    """Number of epochs to train; 0 trains until ``patience`` stops the run."""
    epoch_length: int = 250
    """Number of updates (each on one rollout of all envs) per epoch."""
    deterministic_eval: bool = False
    """Evaluate with the most likely action instead of a sampled one."""
    eval_repeats: int = 2
    """Evaluation episodes after each epoch; 0 skips evaluation and selects models by training return."""
    patience: int = 15
    """Stop after this many epochs without a new best mean return; 0 never stops early."""
    critic_burn_in_epochs: int = 0
    """Epochs at the start during which only the critic is trained (the policy stays fixed)."""
    n_rollout_steps: int = 5
    """Steps collected per env before each update."""
    lr: float = 0.0007
    """Learning rate of the Adam optimizer (policy and critic)."""
    gamma: float = 0.99
    """Discount factor."""
    gae_lambda: float = 1.0
    """Bias/variance trade-off of generalised advantage estimation (1.0: Monte-Carlo style returns)."""
    policy_loss_coef: float = 1.0
    """Weight of the policy loss."""
    value_loss_coef: float = 0.5
    """Weight of the value (critic) loss."""
    entropy_coef: float = 0.0
    """Weight of the entropy bonus that keeps the policy exploring."""
    max_grad_norm: float = 0.5
    """Clip the global gradient norm to this value; 0 disables clipping."""
    device: str = "cpu"
    """Torch device for the update: ``cpu`` or ``cuda`` (``cuda:N`` for a given GPU)."""
    lr_schedule: str = "constant"
    """Optional extra: ``constant`` or ``linear`` (decays the learning rate to 0 over ``n_epochs``)."""
    normalize_advantages: bool = False
    """Optional extra: scale advantages to zero mean and unit std within each (mini-)batch."""

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise ConfigError naming the first invalid field."""
        for name in ("n_epochs", "eval_repeats", "patience", "critic_burn_in_epochs"):
            value = getattr(self, name)
            _check(_is_int(value) and value >= 0, name, "an integer >= 0", value)
        for name in ("epoch_length", "n_rollout_steps"):
            value = getattr(self, name)
            _check(_is_int(value) and value >= 1, name, "an integer >= 1", value)
        _check(isinstance(self.deterministic_eval, bool), "deterministic_eval", "true or false",
               self.deterministic_eval)
        _check(_is_number(self.lr) and self.lr > 0, "lr", "a number > 0", self.lr)
        for name in ("gamma", "gae_lambda"):
            value = getattr(self, name)
            _check(_is_number(value) and 0 <= value <= 1, name, "a number in [0, 1]", value)
        for name in ("policy_loss_coef", "value_loss_coef", "entropy_coef", "max_grad_norm"):
            value = getattr(self, name)
            _check(_is_number(value) and value >= 0, name, "a number >= 0", value)
        _check(isinstance(self.device, str) and self.device.split(":")[0] in DEVICES, "device",
               "'cpu', 'cuda' or 'cuda:N'", self.device)
        _check(self.lr_schedule in LR_SCHEDULES, "lr_schedule", f"one of {LR_SCHEDULES}", self.lr_schedule)
        _check(isinstance(self.normalize_advantages, bool), "normalize_advantages", "true or false",
               self.normalize_advantages)
        if self.lr_schedule == "linear":
            _check(self.n_epochs > 0, "n_epochs", "an integer >= 1 when lr_schedule is 'linear'",
                   self.n_epochs)

    def to_dict(self) -> dict[str, Any]:
        """Plain values, as written to the run directory's config.yaml."""
        return asdict(self)


@dataclass
class A2CAlgorithmConfig(AlgorithmConfig):
    """Hyperparameters of A2C (advantage actor-critic, one gradient step per rollout)."""


@dataclass
class PPOAlgorithmConfig(AlgorithmConfig):
    """Hyperparameters of PPO: the shared fields plus mini-batching and the clipped objective.

    The defaults differ from A2C's where PPO wants it (longer rollouts, fewer updates per epoch, a linear
    learning rate decay); they solve CartPole-v1 in seconds with ``runner=dev`` and its 8 envs.
    """

    epoch_length: int = 10
    """Number of updates (each on one rollout of all envs) per epoch."""
    n_rollout_steps: int = 32
    """Steps collected per env before each update."""
    lr: float = 0.002
    """Learning rate of the Adam optimizer (policy and critic)."""
    gamma: float = 0.98
    """Discount factor."""
    gae_lambda: float = 0.8
    """Bias/variance trade-off of generalised advantage estimation (1.0: Monte-Carlo style returns)."""
    lr_schedule: str = "linear"
    """Optional extra: ``constant`` or ``linear`` (decays the learning rate to 0 over ``n_epochs``)."""
    batch_size: int = 256
    """Samples per mini-batch; each rollout of ``n_rollout_steps * n_envs`` samples is split into these."""
    n_optimization_epochs: int = 10
    """Passes over each rollout per update."""
    clip_range: float = 0.2
    """PPO ratio clipping: the policy may move the action probabilities by at most this factor per update."""
    normalize_advantages: bool = True
    """Optional extra: scale advantages to zero mean and unit std within each mini-batch."""
    clip_range_vf: float = 0.0
    """Optional extra: clip value predictions to this distance from the rollout's values; 0 disables."""

    def validate(self) -> None:
        super().validate()
        for name in ("batch_size", "n_optimization_epochs"):
            value = getattr(self, name)
            _check(_is_int(value) and value >= 1, name, "an integer >= 1", value)
        _check(_is_number(self.clip_range) and self.clip_range > 0, "clip_range", "a number > 0",
               self.clip_range)
        _check(_is_number(self.clip_range_vf) and self.clip_range_vf >= 0, "clip_range_vf", "a number >= 0",
               self.clip_range_vf)


@dataclass
class BCAlgorithmConfig:
    """Hyperparameters of behavioural cloning: the policy learns the actions of a dataset (``dataset=...``) by
    maximum likelihood, in mini-batches, one pass over the training split per epoch."""

    n_epochs: int = 20
    """Number of epochs (passes over the training split); 0 trains until ``patience`` stops the run."""
    batch_size: int = 256
    """Samples per mini-batch; each mini-batch is one gradient step."""
    lr: float = 0.001
    """Learning rate of the Adam optimizer."""
    lr_schedule: str = "constant"
    """``constant`` or ``linear`` (decays the learning rate to 0 over ``n_epochs``)."""
    max_grad_norm: float = 0.0
    """Clip the global gradient norm to this value; 0 disables clipping."""
    validation_fraction: float = 0.1
    """Share of the dataset's episodes held out for the validation loss (a dataset of one episode holds out
    that share of its last steps); 0 holds none out."""
    eval_repeats: int = 4
    """Evaluation episodes in the env after each epoch; 0 skips evaluation and selects models by the
    validation loss (the training loss without a validation split)."""
    deterministic_eval: bool = True
    """Evaluate with the most likely action (what the dataset's actor would do) instead of a sampled one."""
    patience: int = 5
    """Stop after this many epochs without a new best score; 0 never stops early."""
    device: str = "cpu"
    """Torch device: ``cpu`` or ``cuda`` (``cuda:N`` for a given GPU); the dataset is held there."""

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise ConfigError naming the first invalid field."""
        for name in ("n_epochs", "eval_repeats", "patience"):
            value = getattr(self, name)
            _check(_is_int(value) and value >= 0, name, "an integer >= 0", value)
        _check(_is_int(self.batch_size) and self.batch_size >= 1, "batch_size", "an integer >= 1",
               self.batch_size)
        _check(_is_number(self.lr) and self.lr > 0, "lr", "a number > 0", self.lr)
        _check(self.lr_schedule in LR_SCHEDULES, "lr_schedule", f"one of {LR_SCHEDULES}", self.lr_schedule)
        if self.lr_schedule == "linear":
            _check(self.n_epochs > 0, "n_epochs", "an integer >= 1 when lr_schedule is 'linear'",
                   self.n_epochs)
        _check(_is_number(self.max_grad_norm) and self.max_grad_norm >= 0, "max_grad_norm", "a number >= 0",
               self.max_grad_norm)
        _check(_is_number(self.validation_fraction) and 0 <= self.validation_fraction < 1,
               "validation_fraction", "a number in [0, 1)", self.validation_fraction)
        _check(isinstance(self.deterministic_eval, bool), "deterministic_eval", "true or false",
               self.deterministic_eval)
        _check(isinstance(self.device, str) and self.device.split(":")[0] in DEVICES, "device",
               "'cpu', 'cuda' or 'cuda:N'", self.device)

    def to_dict(self) -> dict[str, Any]:
        """Plain values, as written to the run directory's config.yaml."""
        return asdict(self)


ALGORITHM_CONFIGS: dict[str, type[AlgorithmConfig] | type[BCAlgorithmConfig]] = {
    "a2c": A2CAlgorithmConfig, "ppo": PPOAlgorithmConfig, "bc": BCAlgorithmConfig}

TrainerConfig = AlgorithmConfig | BCAlgorithmConfig
"""The config of any trainer: an on-policy algorithm's or behavioural cloning's."""

C = TypeVar("C", bound=AlgorithmConfig | BCAlgorithmConfig)


def algorithm_config_from_dict(config_class: type[C], values: Any) -> C:
    """Build ``config_class`` from a mapping; unknown or missing keys raise ConfigError naming them."""
    from maze_engine.core.factory import _plain_config

    values = _plain_config(values)
    if not isinstance(values, dict):
        raise ConfigError(f"algorithm: expected a mapping of {config_class.__name__} fields, "
                          f"got {type(values).__name__}")
    values = {key: value for key, value in values.items() if key not in ("_target_", "name")}
    known = {field.name for field in fields(config_class)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ConfigError(f"algorithm.{unknown[0]}: not a field of {config_class.__name__}; "
                          f"expected one of {sorted(known)}")
    missing = [field.name for field in fields(config_class)
               if field.name not in values and field.default is MISSING]
    if missing:  # pragma: no cover - every field has a default today
        raise ConfigError(f"algorithm.{missing[0]}: missing")
    return config_class(**values)


@dataclass
class A2CSchema(A2CAlgorithmConfig):
    """Hydra schema of ``conf/algorithm/a2c.yaml``: the A2C fields plus the class the node builds."""

    _target_: str = "maze_engine.training.a2c.A2CAlgorithmConfig"


@dataclass
class PPOSchema(PPOAlgorithmConfig):
    """Hydra schema of ``conf/algorithm/ppo.yaml``: the PPO fields plus the class the node builds."""

    _target_: str = "maze_engine.training.ppo.PPOAlgorithmConfig"


@dataclass
class BCSchema(BCAlgorithmConfig):
    """Hydra schema of ``conf/algorithm/bc.yaml``: the behavioural cloning fields plus the class it builds."""

    _target_: str = "maze_engine.training.bc.BCAlgorithmConfig"


def register_configs() -> None:
    """Store the schemas of the training config groups in Hydra's ConfigStore (outside any group, so they do
    not show up as options); ``conf/algorithm/*.yaml`` and ``conf/runner/{dev,local}.yaml`` extend them, so
    values and overrides are type-checked while Hydra composes (``algorithm.lr=abc`` fails naming the key)."""
    from hydra.core.config_store import ConfigStore

    from maze_engine.training.runners import TrainingRunnerConfig

    store = ConfigStore.instance()
    store.store(name="maze_schema_algorithm_a2c", node=A2CSchema)
    store.store(name="maze_schema_algorithm_ppo", node=PPOSchema)
    store.store(name="maze_schema_algorithm_bc", node=BCSchema)
    store.store(name="maze_schema_runner_training", node=TrainingRunnerConfig)
