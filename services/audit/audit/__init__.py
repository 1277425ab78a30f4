"""The audit service: the hash-chained, checkpointed evidence log of every event."""
