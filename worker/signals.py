"""SIGTERM and SIGINT stop a service gracefully: it answers what it holds and hands its episodes over."""

from __future__ import annotations

import logging
import signal
from collections.abc import Callable
from typing import Any

logger = logging.getLogger(__name__)


def stop_on_signals(stop: Callable[[], None], what: str = "stopping after answering the states held") -> None:
    """Call ``stop`` on SIGTERM and SIGINT (main thread only)."""
    def handle(signum: int, frame: Any) -> None:
        logger.info("%s received: %s", signal.Signals(signum).name, what)
        stop()

    signal.signal(signal.SIGTERM, handle)
    signal.signal(signal.SIGINT, handle)
