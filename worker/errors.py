"""The worker's root exception, its exit codes, and exceptions as one readable line.

Every exception the worker package defines derives from ``WorkerError`` (the client's ``MazeClientError``
too), so ``except WorkerError`` catches anything of ours and nothing of pika's or the engine's.
"""

import sys

EXIT_OK = 0
EXIT_FAILURE = 1
"""The broker cannot serve (missing plugin, refused credentials) or the worker failed."""
EXIT_CONFIG_ERROR = 2
"""A bad override, value or argument: one ``maze-worker: error: ...`` line, never retried."""


class WorkerError(Exception):
    """Root of every exception of the worker package."""


class ConfigProblem(WorkerError):
    """A config mistake, reported as one line with exit code 2."""


def one_line(err: BaseException) -> str:
    """An exception's message on one line (Hydra's span several, with the reason in the cause)."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    text = lines[0] if lines else type(err).__name__
    cause = err.__cause__
    if cause is not None and str(cause).strip():
        text += f" ({str(cause).strip().splitlines()[0]})"
    return text


def fail(message: str, code: int) -> int:
    """Print ``maze-worker: error: message`` to stderr; returns ``code`` (the exit code)."""
    print(f"maze-worker: error: {message}", file=sys.stderr, flush=True)
    return code
