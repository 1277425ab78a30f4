"""The FastAPI app every service serves: its routers plus /healthz, /readyz and /metrics."""

from __future__ import annotations

import gc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import uvicorn
from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import PlainTextResponse

from common.health import health_router
from common.logging import configure
from common.runtime import Runtime
from common.settings import ServiceSettings


def service_app(runtime: Runtime, *routers: APIRouter, title: str, description: str = "") -> FastAPI:
    app = FastAPI(title=title, description=description, lifespan=runtime.lifespan)
    app.include_router(health_router(runtime.checks))
    for router in routers:
        app.include_router(router)

    @app.get("/metrics", response_class=PlainTextResponse, tags=["health"])
    async def metrics(request: Request) -> str:
        values = dict(runtime.metrics())
        if runtime.relay is not None:
            values["outbox_backlog"] = await runtime.relay.backlog()
        prefix = runtime.settings.service_name
        return "".join(f"{prefix}_{name} {value}\n" for name, value in sorted(values.items()))

    return app


def tune_gc(gen0_threshold: int) -> None:
    """For a service process once started: what exists now (modules, the app, pools, policies) lives as long as
    the process and is moved out of the collector's sight (gc.freeze), and the youngest generation is collected
    less often. Cycles are still collected; the process spends less of each request and batch doing it."""
    gc.collect()
    gc.freeze()
    _, gen1, gen2 = gc.get_threshold()
    gc.set_threshold(gen0_threshold, gen1, gen2)


def tune_gc_once_started(app: FastAPI, gen0_threshold: int) -> None:
    """Tune the process's collector (tune_gc) when the app's lifespan has started the service."""
    starting = app.router.lifespan_context

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[Any]:
        async with starting(app) as state:
            tune_gc(gen0_threshold)
            yield state

    app.router.lifespan_context = lifespan


def serve(app: FastAPI, settings: ServiceSettings) -> None:
    """Run a service's app in the foreground; uvicorn turns SIGTERM into the lifespan's orderly stop."""
    tune_gc_once_started(app, settings.gc_gen0_threshold)
    uvicorn.run(app, host=settings.http_host, port=settings.http_port, log_config=None, server_header=False)


def configure_logging(settings: ServiceSettings) -> None:
    configure(settings.service_name, fmt=settings.log_format, level=settings.log_level)
