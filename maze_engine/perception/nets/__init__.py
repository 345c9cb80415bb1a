"""Built-in policy and value networks."""
