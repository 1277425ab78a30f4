"""Shared plumbing for every service: events, outbox, consumer runner, database, logging, settings."""
