"""Chaos run: a steady load of reports through the whole stack while its parts are killed, then checks."""
