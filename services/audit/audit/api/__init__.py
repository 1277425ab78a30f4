"""The audit service's HTTP API."""
