"""Perception: action distributions, torch model blocks, built-in nets, policy and critic composers."""
