"""The demo's production system: CartPole episodes whose every action is asked of the agent workers.

Each episode is a gymnasium env of this process; its states go to the workers through ``worker.client`` and
the actions come back, many episodes in flight from one thread, as a production system would run them. Every
finished episode is recorded with the policy version that acted in it (the replies say which), so returns
can be compared across versions and plotted over time.
"""

from __future__ import annotations

import statistics
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import gymnasium as gym

from worker.client import MazeClient, ReplyError
from worker.client.errors import raise_for_error

ENV_NAME = "CartPole-v1"
TICK_S = 0.1
"""How often ``play`` calls its ``stop`` condition (which may do work of its own, e.g. follow a job)."""


@dataclass
class _Running:
    env: gym.Env
    episode: str
    seq: int = 0
    episode_return: float = 0.0
    sent_at: float = 0.0
    version: int | None = None


@dataclass(frozen=True)
class FinishedEpisode:
    """One episode the production system played to its end."""

    finished_at: float
    """Seconds since the production system started."""
    version: int | None
    """The policy version that acted (None: the worker serves a policy that is not a published one)."""
    episode_return: float


class Production:
    """Plays CartPole episodes against the workers of ``client``'s prefix; see the module docstring.

    ``play`` may be called again and again: running episodes carry over from one call to the next, so the
    traffic never pauses between the demo's phases; ``drain`` lets them finish.
    """

    def __init__(self, client: MazeClient, seed: int = 0,
                 clock: Callable[[], float] = time.perf_counter) -> None:
        self.client = client
        self.clock = clock
        self.started = clock()
        self.finished: list[FinishedEpisode] = []
        self.first_served: dict[int | None, float] = {}
        """Version -> seconds since start when a reply first carried it."""
        self.round_trips = 0
        self.latencies_ms: list[float] = []
        self.errors: dict[str, int] = {}
        self._running: dict[str, _Running] = {}
        self._seeds = iter(range(seed, seed + 10**9))
        self._deferred: deque[tuple[float, _Running, list[float], float, bool]] = deque()
        self._next_send = 0.0

    # -- playing ---------------------------------------------------------------------------------------------

    def play(self, in_flight: int, seconds: float | None = None, stop: Callable[[], bool] | None = None,
             rate: float | None = None) -> None:
        """Keep ``in_flight`` episodes running until ``seconds`` have passed or ``stop()`` (asked every 0.1 s)
        is true; ``rate`` caps the actions asked per second (None: as fast as the workers answer)."""
        until = None if seconds is None else self.clock() + seconds
        next_tick = 0.0
        while True:
            now = self.clock()
            if until is not None and now >= until:
                return
            if stop is not None and now >= next_tick:
                next_tick = now + TICK_S
                if stop():
                    return
            while len(self._running) < in_flight:
                self._start_episode()
            self._step(rate)

    def drain(self, timeout: float = 60.0) -> None:
        """Let the running episodes finish (none is started), for up to ``timeout`` seconds."""
        until = self.clock() + timeout
        while self._running and self.clock() < until:
            self._step(None)

    def _start_episode(self) -> None:
        env = gym.make(ENV_NAME)
        state, _ = env.reset(seed=next(self._seeds))
        item = _Running(env, f"demo-{uuid.uuid4().hex[:12]}", sent_at=self.clock())
        self._running[item.episode] = item
        self.client.send(item.episode, 0, state.tolist())

    def _step(self, rate: float | None) -> None:
        """Send the states whose time has come, then handle the replies that arrive within a moment."""
        now = self.clock()
        while self._deferred and self._deferred[0][0] <= now:
            _, item, state, reward, done = self._deferred.popleft()
            self._send(item, state, reward, done)
        wait = 0.05 if not self._deferred else max(0.0, min(0.05, self._deferred[0][0] - now))
        for reply in self.client.poll(timeout=wait):
            running = self._running.get(reply.episode or "")
            if running is None or reply.seq != running.seq:
                continue
            item = running
            self.round_trips += 1
            self.latencies_ms.append((self.clock() - item.sent_at) * 1000)
            if reply.error is None:  # error replies carry no policy version
                if reply.policy_version not in self.first_served:
                    self.first_served[reply.policy_version] = self.clock() - self.started
                item.version = reply.policy_version if item.version is None else item.version
            try:
                action = raise_for_error(reply)
            except ReplyError as err:
                code = reply.error.code.value if reply.error else "error"
                self.errors[code] = self.errors.get(code, 0) + 1
                print(f"episode {item.episode}: {err}", flush=True)
                self._end(item, None)
                continue
            if action is None:  # the worker's answer to the final state
                self._end(item, item.episode_return)
                continue
            state, step_reward, terminated, truncated, _ = item.env.step(action)
            reward, done = float(step_reward), bool(terminated or truncated)
            item.episode_return += reward
            item.seq += 1
            if rate is None:
                self._send(item, state.tolist(), reward, done)
            else:
                self._next_send = max(self._next_send + 1.0 / rate, self.clock())
                self._deferred.append((self._next_send, item, state.tolist(), reward, done))

    def _send(self, item: _Running, state: list[float], reward: float, done: bool) -> None:
        item.sent_at = self.clock()
        self.client.send(item.episode, item.seq, state, reward=reward, done=done)

    def _end(self, item: _Running, episode_return: float | None) -> None:
        del self._running[item.episode]
        item.env.close()
        if episode_return is not None:
            self.finished.append(FinishedEpisode(self.clock() - self.started, item.version, episode_return))

    # -- what it saw -----------------------------------------------------------------------------------------

    def elapsed(self) -> float:
        """Seconds since the production system started (the time axis of ``finished``)."""
        return self.clock() - self.started

    def returns(self, version: int | None = None, any_version: bool = True) -> list[float]:
        """Returns of the finished episodes (of ``version`` unless ``any_version``)."""
        return [done.episode_return for done in self.finished if any_version or done.version == version]

    def count(self, version: int | None) -> int:
        return len(self.returns(version, any_version=False))

    def lines(self) -> list[str]:
        """Episodes, returns, throughput, latency and error replies, one line each."""
        returns = self.returns()
        out = [f"episodes finished: {len(returns)}"]
        if returns:
            last = " ".join(f"{value:.0f}" for value in returns[-10:])
            out.append(f"episode returns: mean {statistics.fmean(returns):.1f}, min {min(returns):.0f}, "
                       f"max {max(returns):.0f}; last ten: {last}")
        return out + self.traffic_lines()

    def traffic_lines(self) -> list[str]:
        """Round trips per second, latency and error replies, one line each."""
        seconds = self.elapsed()
        out = [f"round trips: {self.round_trips} in {seconds:.1f} s = "
               f"{self.round_trips / max(seconds, 1e-9):.0f} actions/s"]
        if self.latencies_ms:
            ordered = sorted(self.latencies_ms)
            p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
            out.append(f"latency: p50 {statistics.median(ordered):.2f} ms, p99 {p99:.2f} ms")
        out.append("error replies: " + (", ".join(f"{code} {count}" for code, count in self.errors.items())
                                        if self.errors else "none"))
        return out

    def table(self) -> str:
        """The returns per policy version, one row each."""
        header = (f"{'policy version':>14} | {'episodes':>8} | {'mean return':>11} | {'min':>5} | "
                  f"{'max':>5} | {'first served':>12}")
        rows = [header, "-" * len(header)]
        for version in sorted(self.first_served, key=lambda value: -1 if value is None else value):
            returns = self.returns(version, any_version=False)
            label = "-" if version is None else str(version)
            served = f"{self.first_served[version]:.1f} s"
            if not returns:
                rows.append(f"{label:>14} | {0:>8} | {'-':>11} | {'-':>5} | {'-':>5} | {served:>12}")
                continue
            rows.append(f"{label:>14} | {len(returns):>8} | {statistics.fmean(returns):>11.1f} | "
                        f"{min(returns):>5.0f} | {max(returns):>5.0f} | {served:>12}")
        return "\n".join(rows)


def run_production(client: MazeClient, episodes: int, seconds: float, seed: int = 0) -> Production:
    """Keep ``episodes`` episodes in flight for ``seconds``, then let them finish."""
    production = Production(client, seed)
    production.play(episodes, seconds=seconds)
    production.drain()
    return production
