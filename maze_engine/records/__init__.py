"""Record formats: trajectory files and event logs, their writers, readers and format errors.

Below both the wrappers that record (wrappers/recording, wrappers/logging) and the rollout runners, so
either can use them without importing the other.
"""
