"""The agent service loop: poll -> admit -> decode -> table -> reply -> ack, plus signals and the heap."""
