"""Console entry points that say what to install when only the client is.

``pip install maze-engine`` installs the producer-side client alone (pika, msgpack, numpy); ``maze-worker``
needs the engine too. Without it, the command prints one line saying so instead of an import traceback.
"""

import sys

ENGINE_HINT = "pip install 'maze-engine[engine]'"


def maze_worker() -> None:
    """``maze-worker``: the worker's command line (worker/cli.py)."""
    try:
        from worker.cli import main
    except ModuleNotFoundError as err:
        sys.exit(f"maze-worker: error: {err.name} is not installed; the worker needs the engine: "
                 f"{ENGINE_HINT}")
    main()
