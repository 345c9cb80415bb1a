"""Wrappers: small, single-purpose layers over a StructuredEnv, grouped by what they change."""
