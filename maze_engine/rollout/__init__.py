"""Rollout runners (sequential and parallel) and the trajectory and event-log formats they write."""
