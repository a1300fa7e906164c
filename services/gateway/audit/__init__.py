"""The audit chains as customers read them, and their signed checkpoints."""
