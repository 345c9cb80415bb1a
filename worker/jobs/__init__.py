"""Training, rollout and evaluate jobs sent as RabbitMQ messages and run by job workers (docs/jobs.md)."""
