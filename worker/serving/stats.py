"""The worker's readable statistics line: episodes finished (by why), returns, lengths, states handled."""

from __future__ import annotations

import logging

from worker.episodes.closing import FinishedEpisodes

logger = logging.getLogger(__name__)


def stats_line(finished: FinishedEpisodes, handled: int, open_episodes: int) -> str:
    """One readable line: episodes finished (by why), mean return and length, states handled, open count."""
    reasons = ", ".join(f"{reason} {count}" for reason, count in sorted(finished.by_reason.items()))
    text = f"episodes finished {finished.total}" + (f" ({reasons})" if reasons else "")
    if finished.returns.count:
        returns = finished.returns.summary()
        lengths = finished.lengths.summary()
        text += (f", mean return {returns['mean']:.2f} (min {returns['min']:.2f}, max {returns['max']:.2f}), "
                 f"mean length {lengths['mean']:.1f}")
    return f"{text}; states handled {handled}; open episodes {open_episodes}"
