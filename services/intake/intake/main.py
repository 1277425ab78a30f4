"""The intake service: the app factory and its entry point."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI

from common.db import load_migrations
from common.http import configure_logging, serve, service_app
from common.runtime import Runtime, ServiceSpec
from intake import problems
from intake.api.ack_page import router as ack_page_router
from intake.api.body import DOCUMENTED
from intake.api.incidents import router as incidents_router
from intake.auth import Authenticator
from intake.config import IntakeSettings
from intake.guard import BodyGuard
from intake.projection import handlers
from intake.service import Intake

DESCRIPTION = """The only door for writes from outside: incident reports from safeguarding systems, and
acknowledgements and action records from the people an incident is escalated to.

**No images, video or files, ever.** The school's policy forbids copying or sharing such material. A request
carrying image, video or file data in any field (base64, data: URIs, multipart uploads) is refused with 422.
Record *where* the evidence is instead.

Errors are RFC 9457 problem details (`application/problem+json`) naming the field and the reason.
"""


def create_app(settings: IntakeSettings | None = None, *, intake: Intake | None = None) -> FastAPI:
    settings = settings or IntakeSettings()
    runtime = Runtime(ServiceSpec(settings=settings, migrations=load_migrations("intake.migrations"),
                                  handlers=handlers()))
    app = service_app_with_docs(runtime)
    app.state.settings = settings
    app.state.authenticator = Authenticator(settings)
    app.state.intake = intake or Intake(settings)
    problems.install(app)
    app.add_middleware(BodyGuard, max_body_bytes=settings.max_body_bytes)
    return app


def service_app_with_docs(runtime: Runtime) -> FastAPI:
    app: FastAPI = service_app(
        runtime, incidents_router, ack_page_router, title="Online-safety incident intake", description=DESCRIPTION
    )
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        # Bodies parsed by `json_body` are not FastAPI body fields: add their schemas to the components.
        if app.openapi_schema is None:
            schema = generate()
            components = schema.setdefault("components", {}).setdefault("schemas", {})
            for model in DOCUMENTED:
                model_schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
                components.update(model_schema.pop("$defs", {}))
                components[model.__name__] = model_schema
            app.openapi_schema = schema
        document: dict[str, Any] = app.openapi_schema
        return document

    app.openapi = openapi  # type: ignore[method-assign,unused-ignore]
    return app


def run() -> None:
    settings = IntakeSettings()
    configure_logging(settings)
    serve(create_app(settings), settings)
