"""ObservationNormalizationWrapper: normalizes Box observations with statistics that are given or estimated.

Statistics travel with a run as JSON (``statistics_dump``), never as pickle, so a deployment can load exactly
the statistics its policy was trained with.
"""

import json
import logging
import os
from collections import defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from gymnasium import spaces

from maze_engine.core.env.structured_env import StructuredEnv
from maze_engine.core.errors import ConfigError, MazeError
from maze_engine.core.factory import instantiate
from maze_engine.core.spaces import to_plain
from maze_engine.policies.policy import StructuredPolicy
from maze_engine.policies.random_policy import RandomPolicy
from maze_engine.wrappers.observation.normalization_strategies import (
    ObservationNormalizationStrategy,
    resolve_strategy,
)
from maze_engine.wrappers.wrapper import ObservationWrapper

logger = logging.getLogger(__name__)

STATISTICS_FORMAT = "maze_engine.observation_statistics"
STATISTICS_VERSION = 1
_STRATEGY_CONFIG_KEYS = {"clip_range", "axis"}
_MANUAL_CONFIG_KEYS = {"strategy", "strategy_config", "statistics"}


class MissingStatisticsError(MazeError):
    """Normalization statistics are needed but neither given nor estimable (e.g. in a deployment)."""


def _check_positive(value: Any, field: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{field}: expected a positive integer, got {value!r}")
    return value


class ObservationNormalizationWrapper(ObservationWrapper[StructuredEnv]):
    """Normalizes every Box observation (except ``exclude``) to float32 with a per-key strategy.

    Statistics per key come from, in rising priority: ``default_statistics``, the ``statistics_dump`` file
    if it exists when the wrapper is built, and ``manual_config[key]["statistics"]``. Keys still without
    statistics at the first reset are estimated from ``n_sampling_steps`` steps of ``sampling_policy`` on the
    wrapped env (and written to ``statistics_dump``). An env driven from outside (a deployment) cannot be
    sampled; there, missing statistics raise MissingStatisticsError. Non-Box observations pass unchanged.

    >>> from maze_engine import GymMazeEnv
    >>> env = ObservationNormalizationWrapper.wrap(
    ...     GymMazeEnv("CartPole-v1"), default_strategy="range_zero_one",
    ...     default_strategy_config={"clip_range": [0, 1]}, statistics_dump=None,
    ...     default_statistics={"observation": {"min": -5.0, "max": 5.0}})
    >>> env.seed(0)
    >>> observation = env.reset()["observation"]
    >>> observation.dtype.name, bool(((observation >= 0) & (observation <= 1)).all())
    ('float32', True)
    """

    def __init__(self, env: StructuredEnv, default_strategy: str | type = "mean_zero_std_one",
                 default_strategy_config: Mapping[str, Any] | None = None,
                 default_statistics: Mapping[str, Any] | None = None,
                 statistics_dump: str | None = "statistics.json",
                 sampling_policy: Any = None, n_sampling_steps: int = 1000,
                 exclude: Sequence[str] | None = None,
                 manual_config: Mapping[str, Mapping[str, Any]] | None = None) -> None:
        super().__init__(env)
        _check_positive(n_sampling_steps, "n_sampling_steps")
        self.n_sampling_steps = n_sampling_steps
        self.statistics_dump = statistics_dump
        self.exclude = list(exclude or [])
        self.manual_config = dict(manual_config or {})
        self._original_spaces = env.observation_spaces_dict
        self.sampling_policy: StructuredPolicy = (
            RandomPolicy(env.action_spaces_dict) if sampling_policy is None
            else instantiate(sampling_policy, StructuredPolicy, action_spaces_dict=env.action_spaces_dict))
        self._strategies = self._build_strategies(default_strategy, dict(default_strategy_config or {}))
        self._cached_spaces: dict[int | str, spaces.Dict] | None = None
        if default_statistics is not None:
            self._apply_default_statistics(default_statistics)
        if statistics_dump is not None and Path(statistics_dump).is_file():
            self.load_statistics(statistics_dump)
        self.set_statistics({key: config["statistics"] for key, config in self.manual_config.items()
                             if config.get("statistics") is not None})

    # ----------------------------------------------------------------------------------------- set-up
    def _build_strategies(self, default_strategy: Any,
                          default_config: dict[str, Any]) -> dict[str, ObservationNormalizationStrategy]:
        all_keys = {key: space for step in self._original_spaces.values()
                    for key, space in step.spaces.items()}
        for index, key in enumerate(self.exclude):
            if key not in all_keys:
                raise ConfigError(f"exclude[{index}]: expected one of {sorted(all_keys)}, got {key!r}")
        self._check_strategy_config(default_config, "default_strategy_config")
        boxes = {key: space for key, space in all_keys.items()
                 if isinstance(space, spaces.Box) and key not in self.exclude}
        for key, config in self.manual_config.items():
            if key not in boxes:
                raise ConfigError(f"manual_config.{key}: expected a normalized (Box, not excluded) "
                                  f"observation, one of {sorted(boxes)}")
            if not isinstance(config, Mapping) or set(config) - _MANUAL_CONFIG_KEYS:
                raise ConfigError(f"manual_config.{key}: expected a mapping with keys among "
                                  f"{sorted(_MANUAL_CONFIG_KEYS)}, got {config!r}")
        strategies = {}
        for key, space in boxes.items():
            manual = self.manual_config.get(key, {})
            strategy_field = f"manual_config.{key}.strategy" if "strategy" in manual else "default_strategy"
            strategy_class = resolve_strategy(manual.get("strategy", default_strategy), strategy_field)
            config_field = (f"manual_config.{key}.strategy_config" if "strategy_config" in manual
                            else "default_strategy_config")
            config = {**default_config, **dict(manual.get("strategy_config") or {})}
            self._check_strategy_config(config, config_field)
            try:
                strategies[key] = strategy_class(space, field=key, **config)
            except ConfigError as err:
                raise ConfigError(f"{config_field}: {err}") from err
        return strategies

    @staticmethod
    def _check_strategy_config(config: Mapping[str, Any], field: str) -> None:
        unknown = sorted(set(config) - _STRATEGY_CONFIG_KEYS)
        if unknown:
            raise ConfigError(f"{field}: unexpected key {unknown[0]!r}; "
                              f"expected only {sorted(_STRATEGY_CONFIG_KEYS)}")

    def _apply_default_statistics(self, default_statistics: Mapping[str, Any]) -> None:
        # Either one set of statistics for every key ({mean, std}) or a mapping key -> statistics.
        names = {name for strategy in self._strategies.values() for name in strategy.statistic_names}
        if default_statistics and set(default_statistics) <= names:
            self.set_statistics({key: default_statistics for key in self._strategies})
        else:
            per_key = {key: value for key, value in default_statistics.items() if value is not None}
            self.set_statistics(per_key, field="default_statistics")

    # ------------------------------------------------------------------------------------ statistics
    def get_statistics(self) -> dict[str, dict[str, np.ndarray] | None]:
        """Statistics per normalized key (``None`` where not known yet)."""
        return {key: None if strategy.statistics is None else dict(strategy.statistics)
                for key, strategy in self._strategies.items()}

    def set_statistics(self, statistics: Mapping[str, Mapping[str, Any]], field: str = "statistics") -> None:
        """Use ``statistics`` (``{key: {mean, std}}`` or ``{key: {min, max}}``) for the keys it names."""
        for key, values in statistics.items():
            if key not in self._strategies:
                raise ConfigError(f"{field}.{key}: not a normalized observation; expected one of "
                                  f"{sorted(self._strategies)}")
            self._strategies[key].set_statistics(values)
        self._cached_spaces = None

    def save_statistics(self, path: str | os.PathLike[str]) -> None:
        """Write the known statistics to ``path`` as JSON (atomically, so readers never see half a file)."""
        known = {key: to_plain(stats) for key, stats in self.get_statistics().items() if stats is not None}
        document = {"format": STATISTICS_FORMAT, "version": STATISTICS_VERSION,
                    "strategies": {key: type(self._strategies[key]).__name__ for key in known},
                    "statistics": known}
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        temporary = target.with_name(f".{target.name}.{os.getpid()}.tmp")
        temporary.write_text(json.dumps(document, indent=2), encoding="utf-8")
        os.replace(temporary, target)

    def load_statistics(self, path: str | os.PathLike[str]) -> None:
        """Read statistics written by ``save_statistics`` and use them."""
        try:
            document = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as err:
            raise ConfigError(f"statistics_dump: cannot read statistics from {str(path)!r} ({err})") from err
        if not isinstance(document, Mapping) or document.get("format") != STATISTICS_FORMAT:
            raise ConfigError(f"statistics_dump: {str(path)!r} is not a {STATISTICS_FORMAT} file")
        self.set_statistics(document["statistics"], field=f"statistics_dump[{str(path)!r}]")

    def missing_statistics(self) -> list[str]:
        """Normalized keys that have no statistics yet."""
        return [key for key, strategy in self._strategies.items() if strategy.statistics is None]

    def estimate_statistics(self, n_steps: int | None = None,
                            overwrite: bool = True) -> dict[str, dict[str, np.ndarray] | None]:
        """Step the wrapped env ``n_steps`` times with the sampling policy and estimate statistics from it.

        Keys with statistics in ``manual_config`` keep them; with ``overwrite=False`` so does every key that
        already has statistics. The result is written to ``statistics_dump`` when that is set.
        """
        if not self._env_can_be_sampled():
            raise self._cannot_sample_error()
        steps = self.n_sampling_steps if n_steps is None else _check_positive(n_steps, "n_steps")
        fixed = {key for key, config in self.manual_config.items() if config.get("statistics") is not None}
        targets = [key for key, strategy in self._strategies.items()
                   if key not in fixed and (overwrite or strategy.statistics is None)]
        samples: dict[str, list[Any]] = defaultdict(list)

        def collect(observation: Mapping[str, Any]) -> None:
            for key in targets:
                if key in observation:
                    samples[key].append(np.asarray(observation[key]))

        observation = self.env.reset()
        collect(observation)
        for _ in range(steps):
            action = self.sampling_policy.compute_action(observation, actor_id=self.env.actor_id())
            observation, _, done, _ = self.env.step(action)
            collect(observation)
            if done:
                observation = self.env.reset()
                collect(observation)
        self.set_statistics({key: self._strategies[key].estimate_statistics(np.stack(values))
                             for key, values in samples.items()})
        if self.statistics_dump is not None:
            self.save_statistics(self.statistics_dump)
        return self.get_statistics()

    def _env_can_be_sampled(self) -> bool:
        # A core env fed from outside (the deployment's ExternalCoreEnv) has no simulation to step.
        core_env = getattr(self.maze_env, "core_env", None)
        return not (getattr(core_env, "is_external", False) or type(core_env).__name__ == "ExternalCoreEnv")

    def _cannot_sample_error(self) -> MissingStatisticsError:
        return MissingStatisticsError(
            f"observation normalization statistics missing for {self.missing_statistics()} and the env is "
            "driven from outside, so they cannot be estimated; load the statistics of the training run with "
            "load_statistics(path) or set statistics_dump (or default_statistics) in the wrapper config")

    # ------------------------------------------------------------------------------------- env hooks
    @property
    def observation_spaces_dict(self) -> dict[int | str, spaces.Dict]:
        if self._cached_spaces is None:
            strategies = self._strategies
            self._cached_spaces = {
                step_key: spaces.Dict({key: strategies[key].normalized_space() if key in strategies else sub
                                       for key, sub in space.spaces.items()})
                for step_key, space in self._original_spaces.items()}
        return self._cached_spaces

    def seed(self, seed: int | None) -> None:
        self.sampling_policy.seed(seed)
        self.env.seed(seed)

    def reset(self) -> dict[str, Any]:
        missing = self.missing_statistics()
        if missing:
            if not self._env_can_be_sampled():
                raise self._cannot_sample_error()
            logger.warning("observation normalization statistics missing for %s; estimating them from %d "
                           "steps of the sampling policy", missing, self.n_sampling_steps)
            self.estimate_statistics(overwrite=False)
            still_missing = self.missing_statistics()
            if still_missing:
                raise MissingStatisticsError(
                    f"observations {still_missing} never appeared while sampling {self.n_sampling_steps} "
                    "steps; give their statistics explicitly")
        return super().reset()

    def observation(self, observation: dict[str, Any]) -> dict[str, Any]:
        """The observation with every normalized key replaced by its float32 normalized value."""
        result = dict(observation)
        for key, strategy in self._strategies.items():
            if key in result:
                result[key] = strategy.normalize(result[key])
        return result
