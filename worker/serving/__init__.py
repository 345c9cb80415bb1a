"""The agent service loop: poll -> admit -> decode -> table -> reply -> ack, and the start-up heap."""
