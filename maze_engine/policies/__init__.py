"""Policies: the StructuredPolicy interface, RandomPolicy and loading of trained torch policies."""
