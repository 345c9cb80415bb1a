"""Training and rollout jobs submitted as RabbitMQ messages and run by job workers (docs/jobs.md)."""
