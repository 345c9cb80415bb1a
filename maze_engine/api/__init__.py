"""High-level Python API (RunContext)."""
