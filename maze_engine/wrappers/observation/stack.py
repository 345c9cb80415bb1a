"""ObservationStackWrapper: stacks the last few values of chosen observations along a new leading axis."""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from gymnasium import spaces

from maze_engine.core.env.structured_env import StructuredEnv
from maze_engine.core.errors import ConfigError
from maze_engine.wrappers.wrapper import ObservationWrapper

_ENTRY_KEYS = {"observation", "keep_original", "tag", "delta", "stack_steps"}


@dataclass(frozen=True)
class StackEntry:
    """One line of ``stack_config``: which observation to stack, how deep, and under which key."""

    observation: str
    stack_steps: int
    keep_original: bool = False
    tag: str | None = None
    delta: bool = False

    @property
    def output_key(self) -> str:
        """Key of the stacked value: ``"<observation>-<tag>"``, or the observation's own key without a tag."""
        return f"{self.observation}-{self.tag}" if self.tag else self.observation


def _parse_entry(index: int, raw: Any) -> StackEntry:
    field = f"stack_config[{index}]"
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{field}: expected a mapping with keys {sorted(_ENTRY_KEYS)}, "
                          f"got {type(raw).__name__}")
    unknown = sorted(set(raw) - _ENTRY_KEYS)
    if unknown:
        raise ConfigError(f"{field}: unexpected key {unknown[0]!r}; expected only {sorted(_ENTRY_KEYS)}")
    for required in ("observation", "stack_steps"):
        if required not in raw:
            raise ConfigError(f"{field}.{required}: missing")
    key, steps, tag = raw["observation"], raw["stack_steps"], raw.get("tag")
    if not isinstance(key, str) or not key:
        raise ConfigError(f"{field}.observation: expected an observation key, got {key!r}")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ConfigError(f"{field}.stack_steps: expected a positive integer, got {steps!r}")
    if tag is not None and (not isinstance(tag, str) or not tag):
        raise ConfigError(f"{field}.tag: expected a non-empty string or null, got {tag!r}")
    entry = StackEntry(observation=key, stack_steps=steps, tag=tag,
                       keep_original=bool(raw.get("keep_original", False)),
                       delta=bool(raw.get("delta", False)))
    if entry.keep_original and entry.tag is None and entry.stack_steps > 1:
        raise ConfigError(f"{field}.tag: keep_original needs a tag, otherwise the stack overwrites {key!r}")
    return entry


def _delta_dtype(dtype: np.dtype[Any]) -> np.dtype[Any]:
    # Differences of unsigned or small integers go negative; float32 holds them (float64 stays float64).
    return np.promote_types(dtype, np.float32)


def _stacked_space(space: spaces.Box, entry: StackEntry) -> spaces.Box:
    steps = entry.stack_steps
    if not entry.delta:
        return spaces.Box(low=np.stack([space.low] * steps), high=np.stack([space.high] * steps),
                          dtype=space.dtype)
    dtype = _delta_dtype(space.dtype)
    limit = np.finfo(dtype).max
    low64, high64 = space.low.astype(np.float64), space.high.astype(np.float64)
    with np.errstate(invalid="ignore"):  # inf - inf where a bound is unbounded
        delta_low = np.nan_to_num(low64 - high64, nan=-np.inf)
        delta_high = np.nan_to_num(high64 - low64, nan=np.inf)
    delta_low = np.where(np.isfinite(delta_low), np.clip(delta_low, -limit, limit), -np.inf)
    delta_high = np.where(np.isfinite(delta_high), np.clip(delta_high, -limit, limit), np.inf)
    low = np.stack([delta_low] * (steps - 1) + [low64]).astype(dtype)
    high = np.stack([delta_high] * (steps - 1) + [high64]).astype(dtype)
    return spaces.Box(low=low, high=high, dtype=dtype)


class ObservationStackWrapper(ObservationWrapper[StructuredEnv]):
    """Stacks the last ``stack_steps`` values of an observation, oldest first, the current value last.

    Each ``stack_config`` entry names an ``observation`` key (a Box) and ``stack_steps``. The stack is stored
    under ``"<key>-<tag>"`` when ``tag`` is set (the original stays only with ``keep_original``), else it
    replaces the key. At the start of an episode the missing older steps are zeros. With ``delta``, every
    entry but the last holds the difference of consecutive values (``value[t+1] - value[t]``) while the last
    keeps the current value. Entries with ``stack_steps`` 1 leave the observation unchanged.

    >>> from maze_engine import GymMazeEnv
    >>> env = ObservationStackWrapper.wrap(GymMazeEnv("CartPole-v1"), stack_config=[
    ...     {"observation": "observation", "stack_steps": 3, "keep_original": True, "tag": "stacked"}])
    >>> observation = env.reset()
    >>> observation["observation-stacked"].shape, bool(observation["observation-stacked"][0].any())
    ((3, 4), False)
    """

    def __init__(self, env: StructuredEnv, stack_config: Sequence[Mapping[str, Any]]) -> None:
        super().__init__(env)
        if isinstance(stack_config, Mapping | str) or not isinstance(stack_config, Sequence):
            raise ConfigError(f"stack_config: expected a list of mappings, got {type(stack_config).__name__}")
        entries = [_parse_entry(i, raw) for i, raw in enumerate(stack_config)]
        self.stack_config = [entry for entry in entries if entry.stack_steps > 1]
        self._check_output_keys()
        original = env.observation_spaces_dict
        self._source_spaces = self._find_source_spaces(original)
        # One buffer per source key, deep enough for its longest stack, newest value last.
        self._depth = {key: max(e.stack_steps for e in self.stack_config if e.observation == key)
                       for key in self._source_spaces}
        self._buffers = {key: np.zeros((self._depth[key], *space.shape), dtype=space.dtype)
                         for key, space in self._source_spaces.items()}
        self._filled = dict.fromkeys(self._source_spaces, 0)
        self._dropped = {entry.observation for entry in self.stack_config
                         if not any(e.keep_original or e.tag is None
                                    for e in self.stack_config if e.observation == entry.observation)}
        self._observation_spaces = {step_key: self._stack_space(space)
                                    for step_key, space in original.items()}

    def _check_output_keys(self) -> None:
        seen: set[str] = set()
        for entry in self.stack_config:
            if entry.output_key in seen:
                raise ConfigError(f"stack_config: two entries write the key {entry.output_key!r}; "
                                  "give them different tags")
            seen.add(entry.output_key)

    def _find_source_spaces(self, original: Mapping[Any, spaces.Dict]) -> dict[str, spaces.Box]:
        found: dict[str, spaces.Box] = {}
        for index, entry in enumerate(self.stack_config):
            candidates = [space.spaces[entry.observation] for space in original.values()
                          if entry.observation in space.spaces]
            if not candidates:
                available = sorted({key for space in original.values() for key in space.spaces})
                raise ConfigError(f"stack_config[{index}].observation: expected one of {available}, "
                                  f"got {entry.observation!r}")
            space = candidates[0]
            if not isinstance(space, spaces.Box):
                raise ConfigError(f"stack_config[{index}].observation: {entry.observation!r} must be a Box "
                                  f"space to stack, got {type(space).__name__}")
            found[entry.observation] = space
        return found

    def _stack_space(self, space: spaces.Dict) -> spaces.Dict:
        items = {key: sub for key, sub in space.spaces.items() if key not in self._dropped}
        for entry in self.stack_config:
            if entry.observation in space.spaces:
                items[entry.output_key] = _stacked_space(self._source_spaces[entry.observation], entry)
        return spaces.Dict(items)

    @property
    def observation_spaces_dict(self) -> dict[int | str, spaces.Dict]:
        return self._observation_spaces

    def reset(self) -> dict[str, Any]:
        for key, buffer in self._buffers.items():
            buffer.fill(0)
            self._filled[key] = 0
        return super().reset()

    def observation(self, observation: dict[str, Any]) -> dict[str, Any]:
        """Push the new values into the buffers and return the observation with the stacks in place."""
        for key, buffer in self._buffers.items():
            if key in observation:
                buffer[:-1] = buffer[1:]
                buffer[-1] = observation[key]
                self._filled[key] = min(self._filled[key] + 1, len(buffer))
        result = {key: value for key, value in observation.items() if key not in self._dropped}
        for entry in self.stack_config:
            if entry.observation in observation:
                result[entry.output_key] = self._stack(entry)
        return result

    def _stack(self, entry: StackEntry) -> np.ndarray:
        window = self._buffers[entry.observation][-entry.stack_steps:]
        if not entry.delta:
            return window.copy()  # zero-padded already: reset cleared the buffer
        filled = min(self._filled[entry.observation], entry.stack_steps)
        stacked = np.zeros(window.shape, dtype=_delta_dtype(window.dtype))
        real = window[entry.stack_steps - filled:].astype(stacked.dtype)
        stacked[entry.stack_steps - filled:-1] = real[1:] - real[:-1]
        stacked[-1] = real[-1]
        return stacked
