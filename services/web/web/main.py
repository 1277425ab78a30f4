"""The web app: the app factory and its entry point (`python -m web`)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import datetime
from pathlib import Path

import structlog
from fastapi import FastAPI, Request
from fastapi.responses import Response
from fastapi.staticfiles import StaticFiles

from common.db import load_migrations
from common.events import utc_now
from common.http import configure_logging, serve, service_app
from common.runtime import Runtime, ServiceSpec
from web import auth_pages, desk_pages, report_pages
from web.apis import ApiError, Apis
from web.config import WebSettings
from web.members import load_directory
from web.pages import ASSETS, Refused, SignInNeeded, current_session, redirect, render

log = structlog.get_logger(__name__)


def create_app(settings: WebSettings | None = None, *, clock: Callable[[], datetime] = utc_now) -> FastAPI:
    settings = settings or WebSettings()
    assets = settings.assets_dir or ASSETS
    if not (assets / "govuk-frontend.min.css").is_file():
        raise RuntimeError(f"{assets} has no govuk-frontend.min.css: run `npm ci` in services/web (make install) "
                           "or set WEB_ASSETS_DIR to govuk-frontend's dist/govuk folder")
    runtime = Runtime(ServiceSpec(settings=settings, migrations=load_migrations("web.migrations")))
    app: FastAPI = service_app(runtime, auth_pages.router, desk_pages.router, report_pages.router,
                      title="Online-safety pages for people")
    app.state.settings = settings
    app.state.clock = clock
    app.state.directory = load_directory(settings.policy_dir)  # a bad policy file stops start-up, with its line
    app.state.apis = Apis(intake_url=settings.intake_url, audit_url=settings.audit_url,
                          token_secret=settings.token_secret, timeout=settings.api_timeout_seconds)
    app.mount("/assets", StaticFiles(directory=assets / "assets"), name="assets")
    app.mount("/static", StaticFiles(directory=assets), name="static")
    app.mount("/app", StaticFiles(directory=Path(__file__).with_name("static")), name="app")
    runtime_lifespan = app.router.lifespan_context

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with runtime_lifespan(app):
            yield
        await app.state.apis.close()

    app.router.lifespan_context = lifespan
    _install_error_pages(app)
    return app


def _install_error_pages(app: FastAPI) -> None:
    @app.exception_handler(SignInNeeded)
    async def sign_in_needed(request: Request, exc: SignInNeeded) -> Response:
        return redirect("/sign-in")

    @app.exception_handler(Refused)
    async def refused(request: Request, exc: Refused) -> Response:
        session = await current_session(request)
        return render(request, "message.html", session, status=exc.status, title=exc.title, message=exc.message)

    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError) -> Response:
        log.warning("web.api_error", status=exc.status, detail=exc.detail[:200])
        session = await current_session(request)
        return render(request, "message.html", session, status=502, title="Sorry, there is a problem",
                      message="A part of the service did not answer as expected. Try again in a few minutes.")


def run() -> None:
    settings = WebSettings()
    configure_logging(settings)
    serve(create_app(settings), settings)
