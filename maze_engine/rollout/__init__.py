"""Rollout runners (sequential and parallel); the trajectory and event-log formats they write live in
``maze_engine.records``."""
