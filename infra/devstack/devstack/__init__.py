"""Runs the product's real servers on one machine: PostgreSQL, the Kafka-protocol broker, an SMTP sink."""
