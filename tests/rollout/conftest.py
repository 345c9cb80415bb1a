"""Makes ``rollout_helpers`` importable by name, also in the worker processes of the parallel runner.

Worker processes unpickle the test envs and policies by module name, so the helpers must live in a module
on ``sys.path`` (test modules themselves are imported under pytest-internal names). This runs at
collection, before any worker process or fork server starts.
"""

import sys
from pathlib import Path

_HERE = str(Path(__file__).resolve().parent)
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)
