"""Exceptions raised for user mistakes; each message names the offending field and what was expected."""


class MazeError(Exception):
    """Base class of the engine's own errors."""


class ConfigError(MazeError, ValueError):
    """A configuration value (``_target_`` mapping, constructor argument, YAML key) is invalid."""


class SpaceMismatchError(MazeError, ValueError):
    """A state, observation or action does not fit the space it is meant to live in."""

    def __init__(self, field: str, expected: str, got: str) -> None:
        super().__init__(f"{field}: expected {expected}, got {got}")
        self.field = field
        self.expected = expected
        self.got = got
