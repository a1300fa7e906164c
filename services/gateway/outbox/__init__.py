"""Changes, the transactional outbox, and what the platform's services read over NATS."""
