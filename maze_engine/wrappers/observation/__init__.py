"""Wrappers that change observations: stacking and normalization."""
