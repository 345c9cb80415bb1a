"""Exceptions as one readable line, for error replies and ``maze-worker: error: ...`` messages."""


def one_line(err: BaseException) -> str:
    """An exception's message on one line (Hydra's span several, with the reason in the cause)."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    text = lines[0] if lines else type(err).__name__
    cause = err.__cause__
    if cause is not None and str(cause).strip():
        text += f" ({str(cause).strip().splitlines()[0]})"
    return text
