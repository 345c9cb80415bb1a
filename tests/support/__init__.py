"""Test helpers shared across test folders; tests put ``tests/`` on ``sys.path`` (importlib mode)."""
