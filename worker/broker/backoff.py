"""Capped exponential backoff between reconnection attempts, shared by the agent and the job worker."""


class Backoff:
    """Capped exponential delays: initial, 2x, 4x ... up to the cap; ``reset`` after a healthy period."""

    def __init__(self, initial_s: float, max_s: float) -> None:
        self.initial_s = initial_s
        self.max_s = max_s
        self._next = initial_s

    def next_delay(self) -> float:
        delay = self._next
        self._next = min(self._next * 2, self.max_s)
        return delay

    def reset(self) -> None:
        self._next = self.initial_s
