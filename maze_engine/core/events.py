"""Events: named records with attributes, emitted during a step and written to event logs."""

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class EventRecord:
    """One event raised during an env step, e.g. ``EventRecord("reward", {"value": 1.0})``."""

    name: str
    attributes: dict[str, Any] = field(default_factory=dict)
