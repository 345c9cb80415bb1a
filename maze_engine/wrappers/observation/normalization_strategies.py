"""Normalization strategies: how one Box observation is estimated, normalized and clipped.

A strategy holds the statistics of one observation key. ``mean_zero_std_one`` maps values to
``(x - mean) / std``; ``range_zero_one`` maps them to ``(x - min) / (max - min)``. Both optionally clip the
result to ``clip_range`` and produce float32.
"""

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import numpy as np
from gymnasium import spaces

from maze_engine.core.errors import ConfigError
from maze_engine.core.factory import resolve_target

# Standard deviations and ranges below this count as constant features and are replaced by 1, so that a
# feature that never varied while sampling does not blow up to huge values later.
MIN_SCALE = 1e-8

Statistics = dict[str, np.ndarray]


def _parse_axis(axis: Any, field: str) -> tuple[int, ...] | None:
    if axis is None:
        return None
    axes = [axis] if isinstance(axis, int) and not isinstance(axis, bool) else axis
    if not isinstance(axes, Sequence) or isinstance(axes, str) or \
            not all(isinstance(a, int) and not isinstance(a, bool) for a in axes):
        raise ConfigError(f"{field}.axis: expected an integer, a list of integers or null, got {axis!r}")
    if 0 not in axes:
        raise ConfigError(f"{field}.axis: must include 0 (the axis samples are stacked along), got {axis!r}")
    return tuple(sorted(set(axes)))


def _parse_clip_range(clip_range: Any, field: str) -> tuple[float | None, float | None]:
    if clip_range is None:
        return None, None
    if not isinstance(clip_range, Sequence) or isinstance(clip_range, str) or len(clip_range) != 2:
        raise ConfigError(f"{field}.clip_range: expected [low, high] (either may be null), "
                          f"got {clip_range!r}")
    low, high = (None if bound is None else float(bound) for bound in clip_range)
    if low is not None and high is not None and not low < high:
        raise ConfigError(f"{field}.clip_range: expected low < high, got {clip_range!r}")
    return low, high


class ObservationNormalizationStrategy(ABC):
    """Normalizes one Box observation with statistics that are given or estimated from samples."""

    statistic_names: ClassVar[tuple[str, str]]

    def __init__(self, observation_space: spaces.Box, clip_range: Sequence[float | None] | None = None,
                 axis: int | Sequence[int] | None = 0, field: str = "observation") -> None:
        self.observation_space = observation_space
        self.field = field
        self.clip_low, self.clip_high = _parse_clip_range(clip_range, field)
        self.axis = _parse_axis(axis, field)
        if self.axis is not None and max(self.axis) > len(observation_space.shape):
            raise ConfigError(f"{field}.axis: samples of shape {observation_space.shape} stack to "
                              f"{len(observation_space.shape) + 1} axes, got axis {axis!r}")
        self.statistics: Statistics | None = None
        self._offset: np.ndarray | None = None
        self._scale: np.ndarray | None = None

    @abstractmethod
    def estimate_statistics(self, samples: np.ndarray) -> Statistics:
        """Statistics of ``samples`` (stacked along axis 0), reduced over ``axis``."""

    @abstractmethod
    def _offset_and_scale(self, statistics: Statistics) -> tuple[np.ndarray, np.ndarray]:
        """The ``(offset, scale)`` pair so that ``normalized = (x - offset) / scale``."""

    def _reduce(self, samples: np.ndarray, function: Any) -> np.ndarray:
        reduced = function(samples.astype(np.float64), axis=self.axis, keepdims=self.axis is not None)
        # Drop the sample axis; what is left broadcasts against one observation.
        return np.asarray(reduced[0] if self.axis is not None else reduced, dtype=np.float32)

    def set_statistics(self, statistics: Mapping[str, Any]) -> None:
        """Use ``statistics`` (numbers or nested lists broadcastable to the observation's shape)."""
        if not isinstance(statistics, Mapping) or set(statistics) != set(self.statistic_names):
            got = sorted(statistics) if isinstance(statistics, Mapping) else type(statistics).__name__
            raise ConfigError(f"{self.field}.statistics: expected the keys {list(self.statistic_names)}, "
                              f"got {got}")
        converted: Statistics = {}
        for name in self.statistic_names:
            try:
                value = np.asarray(statistics[name], dtype=np.float32)
                np.broadcast_shapes(value.shape, self.observation_space.shape)
            except (TypeError, ValueError) as err:
                raise ConfigError(f"{self.field}.statistics.{name}: expected numbers broadcastable to shape "
                                  f"{self.observation_space.shape}, got {statistics[name]!r}") from err
            if not np.all(np.isfinite(value)):
                raise ConfigError(f"{self.field}.statistics.{name}: expected finite numbers, "
                                  f"got {value.tolist()}")
            converted[name] = value
        self.statistics = converted
        self._offset, self._scale = self._offset_and_scale(converted)

    def normalize(self, value: Any) -> np.ndarray:
        """``value`` normalized and clipped, as float32."""
        if self._offset is None or self._scale is None:
            raise ConfigError(f"{self.field}: normalization statistics are not set")
        normalized = (np.asarray(value, dtype=np.float32) - self._offset) / self._scale
        if self.clip_low is not None or self.clip_high is not None:
            np.clip(normalized, self.clip_low, self.clip_high, out=normalized)
        return normalized

    def normalized_space(self) -> spaces.Box:
        """The float32 Box that normalized values live in (bounds follow from statistics and clipping)."""
        shape = self.observation_space.shape
        if self._offset is None:
            low = np.full(shape, -np.inf if self.clip_low is None else self.clip_low, dtype=np.float32)
            high = np.full(shape, np.inf if self.clip_high is None else self.clip_high, dtype=np.float32)
        else:
            # The same float32 arithmetic as ``normalize``: rounding is monotone, so every normalized value
            # stays within the normalized bounds.
            low = np.broadcast_to(self.normalize(self.observation_space.low), shape).copy()
            high = np.broadcast_to(self.normalize(self.observation_space.high), shape).copy()
        return spaces.Box(low=low, high=high, dtype=np.float32)


class MeanZeroStdOneObservationNormalizationStrategy(ObservationNormalizationStrategy):
    """``(x - mean) / std``: zero mean and unit variance over the sampled observations."""

    statistic_names = ("mean", "std")

    def estimate_statistics(self, samples: np.ndarray) -> Statistics:
        return {"mean": self._reduce(samples, np.mean), "std": self._reduce(samples, np.std)}

    def _offset_and_scale(self, statistics: Statistics) -> tuple[np.ndarray, np.ndarray]:
        std = statistics["std"]
        return statistics["mean"], np.where(std < MIN_SCALE, np.float32(1), std).astype(np.float32)


class RangeZeroOneObservationNormalizationStrategy(ObservationNormalizationStrategy):
    """``(x - min) / (max - min)``: the sampled range maps onto [0, 1]."""

    statistic_names = ("min", "max")

    def estimate_statistics(self, samples: np.ndarray) -> Statistics:
        return {"min": self._reduce(samples, np.min), "max": self._reduce(samples, np.max)}

    def _offset_and_scale(self, statistics: Statistics) -> tuple[np.ndarray, np.ndarray]:
        spread = statistics["max"] - statistics["min"]
        return statistics["min"], np.where(spread < MIN_SCALE, np.float32(1), spread).astype(np.float32)


STRATEGIES: dict[str, type[ObservationNormalizationStrategy]] = {
    "mean_zero_std_one": MeanZeroStdOneObservationNormalizationStrategy,
    "range_zero_one": RangeZeroOneObservationNormalizationStrategy,
}


def resolve_strategy(strategy: Any, field: str) -> type[ObservationNormalizationStrategy]:
    """A strategy class from its short name, a class path (ours, Maze's or a custom subclass) or the class."""
    if isinstance(strategy, type) and issubclass(strategy, ObservationNormalizationStrategy):
        return strategy
    if isinstance(strategy, str):
        if strategy in STRATEGIES:
            return STRATEGIES[strategy]
        class_name = strategy.rpartition(".")[2]
        for known in STRATEGIES.values():
            if class_name == known.__name__:
                return known
        if "." in strategy:
            resolved = resolve_target(strategy)
            if isinstance(resolved, type) and issubclass(resolved, ObservationNormalizationStrategy):
                return resolved
    raise ConfigError(f"{field}: expected one of {sorted(STRATEGIES)} or the class path of an "
                      f"ObservationNormalizationStrategy, got {strategy!r}")
