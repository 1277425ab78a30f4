"""Intake's HTTP routers: thin; the work is in `intake.service`."""
