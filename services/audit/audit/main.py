"""The audit service: consumes every topic into the hash-chained evidence log, signs checkpoints, and
serves verification, timelines, search, termly reports and replay checks."""

from __future__ import annotations

from fastapi import FastAPI

from audit.api.routes import router
from audit.checkpoints import checkpoint_loop, signer_for
from audit.config import AuditSettings
from audit.store import raw_handlers
from common.db import load_migrations
from common.http import configure_logging, serve, service_app
from common.runtime import Runtime, ServiceSpec

DESCRIPTION = """The tamper-evident evidence log. Every event of every topic (dead letters included) is
stored once, in order per school, as a hash chain; checkpoints are C2SP signed notes (Ed25519) over an
RFC 6962 Merkle tree. Reads need a person's token; governors see no pupil-identifying fields. Every read
of the log is itself recorded in it."""


def create_app(settings: AuditSettings | None = None) -> FastAPI:
    settings = settings or AuditSettings()
    signer = signer_for(settings)
    runtime = Runtime(ServiceSpec(
        settings=settings, migrations=load_migrations("audit.migrations"), raw_handlers=raw_handlers(),
        background=[checkpoint_loop(settings, signer)],
    ))
    app: FastAPI = service_app(runtime, router, title="Online-safety audit log", description=DESCRIPTION)
    app.state.settings = settings
    app.state.signer = signer
    app.state.runtime = runtime
    return app


def run() -> None:
    settings = AuditSettings()
    configure_logging(settings)
    serve(create_app(settings), settings)
