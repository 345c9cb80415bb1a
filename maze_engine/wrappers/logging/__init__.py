"""Wrappers that observe the env without changing it: statistics and event logs."""
