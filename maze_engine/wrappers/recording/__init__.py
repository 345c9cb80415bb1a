"""Wrappers that record what happens: trajectories."""
