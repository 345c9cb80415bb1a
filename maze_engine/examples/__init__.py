"""Runnable examples: the engine demo and snippets used by the docs."""
