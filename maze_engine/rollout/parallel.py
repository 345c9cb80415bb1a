"""ParallelRolloutRunner: episodes spread over worker processes, statistics merged exactly in the parent.

Workers are started with the ``forkserver`` method (``spawn`` where that is unavailable), never plain
``fork``, so torch thread pools and greenlets of the parent are never copied into a child. Worker ``i`` runs
its share of the episodes with its own seed (derived from the runner's ``seed``) through the same loop as
SequentialRolloutRunner, reports each finished episode for the progress bar and sends back its raw
statistics, which the parent merges in worker order: the same seed gives the same statistics.
"""

import multiprocessing
import os
import pickle
import signal
import sys
import traceback
from multiprocessing.connection import Connection, wait
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any

from tqdm import tqdm

from maze_engine.core.env.structured_env import StructuredEnv
from maze_engine.core.errors import ConfigError, MazeError
from maze_engine.core.factory import _plain_config
from maze_engine.rollout.components import apply_wrappers, build_env, build_policy
from maze_engine.rollout.runner import (
    Aggregates,
    RolloutRunner,
    _positive_int,
    derive_seeds,
    merge_aggregates,
)
from maze_engine.rollout.sequential import SequentialRolloutRunner


class RolloutWorkerError(MazeError, RuntimeError):
    """A rollout worker process failed or died; the message carries its traceback or exit code."""


def _start_method() -> str:
    return "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"


def _worker_main(payload: bytes, runner_kwargs: dict[str, Any], output_dir: str, conn: Connection,
                 index: int = 0) -> None:
    """Entry point of worker ``index``: run a share of the episodes and send the results through ``conn``."""
    try:
        env, wrappers, agent = pickle.loads(payload)
        runner = SequentialRolloutRunner(**runner_kwargs)
        aggregates = runner.collect(env, wrappers, agent, Path(output_dir),
                                    on_episode=lambda: conn.send(("episode", None)), part=index)
        conn.send(("done", aggregates))
    except KeyboardInterrupt:
        pass  # the parent is shutting down and reports the interruption itself
    except BaseException as err:  # noqa: BLE001 - everything must reach the parent
        try:
            error: BaseException | None = err
            pickle.dumps(err)
        except Exception:  # noqa: BLE001 - an unpicklable exception travels as text only
            error = None
        conn.send(("error", (error, f"{type(err).__name__}: {err}", traceback.format_exc())))
    finally:
        conn.close()


def _exit_description(code: int | None) -> str:
    if code is not None and code < 0:
        try:
            return f"was killed by signal {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with code {code}"


class ParallelRolloutRunner(RolloutRunner):
    """Runs the episodes in ``n_processes`` worker processes and merges their statistics.

    ``n_processes`` is capped at the number of CPU cores and at ``n_episodes``. Env, wrappers and policy
    reach the workers pickled: pass configs, classes or module-level factories (instances are copied into
    every worker). They are built once in this process first, so a bad config fails here with a clear error.
    A worker that raises or dies stops the run with RolloutWorkerError (or the worker's own MazeError).

    >>> import tempfile
    >>> runner = ParallelRolloutRunner(n_episodes=4, n_processes=2, max_episode_steps=5, seed=0, silent=True)
    >>> stats = runner.run({"_target_": "maze_engine.make_gym_maze_env", "name": "CartPole-v1"},
    ...                    {"_target_": "maze_engine.RandomPolicy"}, output_dir=tempfile.mkdtemp())
    >>> stats["episode_length"]["count"]
    4
    """

    def __init__(self, n_episodes: int = 50, max_episode_steps: int | None = None,
                 deterministic: bool = False, record_trajectory: bool = False,
                 record_event_logs: bool = False, n_processes: int = 5, seed: int | None = None,
                 silent: bool = False, record_minari: str | None = None) -> None:
        super().__init__(n_episodes=n_episodes, max_episode_steps=max_episode_steps,
                         deterministic=deterministic, record_trajectory=record_trajectory,
                         record_event_logs=record_event_logs, seed=seed, silent=silent,
                         record_minari=record_minari)
        self.n_processes: int = _positive_int("n_processes", n_processes)  # type: ignore[assignment]

    def effective_processes(self) -> int:
        """Workers a run starts: ``n_processes`` capped at the CPU count and at ``n_episodes``."""
        return max(1, min(self.n_processes, os.cpu_count() or 1, self.n_episodes))

    def episode_shares(self) -> list[int]:
        """Episodes per worker: as even as possible, the first workers taking the remainder."""
        workers = self.effective_processes()
        base, extra = divmod(self.n_episodes, workers)
        return [base + (1 if index < extra else 0) for index in range(workers)]

    def worker_seeds(self) -> list[int] | None:
        """Each worker's seed, derived from ``seed``; None when the runner is unseeded (fresh entropy)."""
        return derive_seeds(self.seed, self.effective_processes()) if self.seed is not None else None

    def _collect(self, env: Any, wrappers: Any, agent: Any, output_dir: Path) -> Aggregates:
        env, wrappers, agent = (_plain_config(env), _plain_config(wrappers), _plain_config(agent))
        self._check_buildable(env, wrappers, agent)
        payload = self._pickle_payload(env, wrappers, agent)
        shares = self.episode_shares()
        # Unseeded runs still need distinct worker seeds, or every worker would play the same episodes.
        seeds = self.worker_seeds() or derive_seeds(None, len(shares))
        context: Any = multiprocessing.get_context(_start_method())
        if _start_method() == "forkserver":
            # Workers fork from a server that has already imported the engine (and torch, when the policy
            # needs it), so each worker skips those imports. Applies when this process starts the server.
            context.set_forkserver_preload([__name__, *(["torch"] if "torch" in sys.modules else [])])
        processes: list[BaseProcess] = []
        connections: list[Connection] = []
        try:
            for index, (share, seed) in enumerate(zip(shares, seeds, strict=True)):
                receiver, sender = context.Pipe(duplex=False)
                runner_kwargs = {"n_episodes": share, "max_episode_steps": self.max_episode_steps,
                                 "deterministic": self.deterministic, "seed": seed, "silent": True,
                                 "record_trajectory": self.record_trajectory,
                                 "record_event_logs": self.record_event_logs,
                                 "record_minari": self.record_minari}
                process = context.Process(target=_worker_main, name=f"maze-rollout-{index}", daemon=True,
                                          args=(payload, runner_kwargs, str(output_dir), sender, index))
                process.start()
                sender.close()  # the worker holds the only write end, so its death reads as EOF here
                processes.append(process)
                connections.append(receiver)
            results = self._gather(processes, connections)
        finally:
            for process in processes:
                if process.is_alive():
                    process.terminate()
                process.join(timeout=5)
            for connection in connections:
                connection.close()
        return merge_aggregates([results[index] for index in range(len(processes))])

    def _gather(self, processes: list[BaseProcess], connections: list[Connection]) -> dict[int, Aggregates]:
        """Collect every worker's result, advancing the progress bar; raise as soon as a worker fails."""
        results: dict[int, Aggregates] = {}
        pending = set(range(len(processes)))
        with tqdm(total=self.n_episodes, desc="rollout", unit="episode", file=sys.stderr,
                  disable=self.silent, dynamic_ncols=True) as progress:

            def handle(index: int, message: tuple[str, Any]) -> None:
                kind, data = message
                if kind == "episode":
                    progress.update(1)
                elif kind == "done":
                    results[index] = data
                    pending.discard(index)
                elif kind == "error":
                    error, summary, remote_traceback = data
                    if isinstance(error, MazeError) and not isinstance(error, RolloutWorkerError):
                        error.add_note(f"(raised in rollout worker {index})\n{remote_traceback}")
                        raise error
                    raise RolloutWorkerError(f"rollout worker {index} failed: {summary}\n"
                                             f"--- worker traceback ---\n{remote_traceback}")

            while pending:
                by_object: dict[Any, tuple[int, bool]] = {}
                for index in pending:
                    by_object[connections[index]] = (index, False)
                    by_object[processes[index].sentinel] = (index, True)
                for ready in wait(list(by_object)):
                    index, is_sentinel = by_object[ready]
                    if index not in pending:
                        continue
                    connection = connections[index]
                    try:
                        if not is_sentinel:
                            handle(index, connection.recv())
                            continue
                        # The worker exited: read what it sent before it went, then judge.
                        while connection.poll():
                            handle(index, connection.recv())
                    except EOFError:
                        pass  # the pipe is closed: the worker has gone
                    if index in pending:
                        processes[index].join(timeout=5)
                        raise RolloutWorkerError(
                            f"rollout worker {index} (pid {processes[index].pid}) "
                            f"{_exit_description(processes[index].exitcode)} before finishing its episodes")
        return results

    @staticmethod
    def _check_buildable(env: Any, wrappers: Any, agent: Any) -> None:
        """Build env, wrappers and policy once here, so config mistakes fail before any worker starts."""
        owns_env = not isinstance(env, StructuredEnv)
        stack = build_env(env)
        try:
            stack = apply_wrappers(stack, wrappers)
            build_policy(agent, stack)
        finally:
            if owns_env:
                stack.close()

    @staticmethod
    def _pickle_payload(env: Any, wrappers: Any, agent: Any) -> bytes:
        for field, value in (("env", env), ("wrappers", wrappers), ("policy", agent)):
            try:
                pickle.dumps(value)
            except Exception as err:  # noqa: BLE001 - pickling fails in many ways (lambdas, locks, sockets)
                raise ConfigError(f"{field}: the parallel runner sends it to worker processes, so it must be "
                                  "picklable (a config mapping, a class path or a module-level factory); "
                                  f"got {type(value).__name__} ({err})") from err
        return pickle.dumps((env, wrappers, agent))
