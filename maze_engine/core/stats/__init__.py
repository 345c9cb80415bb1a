"""Statistics: running aggregates of step and episode values, and writers that publish them per epoch."""
