"""Training runners: how the training envs are hosted (``runner=dev`` or ``runner=local``).

``dev`` steps all training envs in this process (InProcessVectorEnv); ``local`` spreads them over worker
processes (SubprocessVectorEnv). Evaluation envs always live in this process. The values live in
``conf/runner/dev.yaml`` and ``conf/runner/local.yaml``.
"""

from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

from maze_engine.core.errors import ConfigError
from maze_engine.core.factory import TARGET_KEY, _plain_config
from maze_engine.training.vector_env import EnvFactory, InProcessVectorEnv, SubprocessVectorEnv, VectorEnv

RUNNER_TYPES = ("dev", "local")
START_METHODS = ("spawn", "forkserver", "fork")


@dataclass
class TrainingRunnerConfig:
    """Where and how many training envs run."""

    type: str = "dev"
    """``dev`` (envs stepped in this process) or ``local`` (envs in worker processes)."""
    n_envs: int = 8
    """Number of training envs; each update sees ``n_envs * algorithm.n_rollout_steps`` samples."""
    n_eval_envs: int = 2
    """Number of evaluation envs (in this process); evaluation episodes are spread over them."""
    normalization_samples: int = 1000
    """Random-action steps that estimate observation normalization statistics when the env needs them."""
    n_processes: int = 0
    """``local`` only: worker processes (0: one per env, capped at the number of CPU cores)."""
    start_method: str = "spawn"
    """``local`` only: how workers start (``spawn``, ``forkserver`` or ``fork``)."""

    def __post_init__(self) -> None:
        if self.type not in RUNNER_TYPES:
            raise ConfigError(f"runner.type: expected one of {RUNNER_TYPES} (runner=dev or runner=local), "
                              f"got {self.type!r}")
        for name, minimum in (("n_envs", 1), ("n_eval_envs", 1), ("normalization_samples", 1),
                              ("n_processes", 0)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
                raise ConfigError(f"runner.{name}: expected an integer >= {minimum}, got {value!r}")
        if self.start_method not in START_METHODS:
            raise ConfigError(f"runner.start_method: expected one of {START_METHODS}, "
                              f"got {self.start_method!r}")

    @classmethod
    def from_config(cls, config: Any) -> "TrainingRunnerConfig":
        """Build from the ``runner`` node (a mapping, a name ``dev``/``local`` or an instance)."""
        config = _plain_config(config)
        if isinstance(config, TrainingRunnerConfig):
            return config
        if config is None:
            return cls()
        if isinstance(config, str):
            return cls(type=config)
        if not isinstance(config, Mapping):
            raise ConfigError(f"runner: expected 'dev', 'local' or a runner config mapping, "
                              f"got {type(config).__name__}")
        if TARGET_KEY in config or "type" not in config:
            raise ConfigError(f"runner: expected a training runner (runner=dev or runner=local), got a "
                              f"rollout runner config (keys {sorted(config)})")
        known = {field.name for field in fields(cls)}
        unknown = sorted(set(config) - known)
        if unknown:
            raise ConfigError(f"runner.{unknown[0]}: unexpected key; expected one of {sorted(known)}")
        return cls(**config)

    def make_vector_env(self, env_factory: EnvFactory) -> VectorEnv:
        """The training envs, hosted as this runner says."""
        if self.type == "local":
            return SubprocessVectorEnv(env_factory, self.n_envs, n_processes=self.n_processes,
                                       start_method=self.start_method)
        return InProcessVectorEnv.from_factory(env_factory, self.n_envs)
