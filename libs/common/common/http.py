"""The FastAPI app every service serves: its routers plus /healthz, /readyz and /metrics."""

from __future__ import annotations

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import PlainTextResponse

from common.health import health_router
from common.runtime import Runtime


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
