"""/healthz (the process answers) and /readyz (its dependencies answer, and which one does not)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping

import asyncpg
from fastapi import APIRouter
from fastapi.responses import JSONResponse

from common.kafka import broker_reachable

Check = Callable[[], Awaitable[None]]


def database_check(pool: asyncpg.Pool) -> Check:
    async def check() -> None:
        async with pool.acquire(timeout=2) as conn:
            await conn.fetchval("SELECT 1")

    return check


def broker_check(bootstrap: str) -> Check:
    async def check() -> None:
        await broker_reachable(bootstrap)

    return check


def health_router(checks: Callable[[], Mapping[str, Check]]) -> APIRouter:
    router = APIRouter(tags=["health"])

    @router.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @router.get("/readyz")
    async def readyz() -> JSONResponse:
        named = dict(checks())
        results = await asyncio.gather(
            *(asyncio.wait_for(c(), timeout=4) for c in named.values()), return_exceptions=True
        )
        status = {
            name: "ok" if not isinstance(r, BaseException) else f"down: {type(r).__name__} {r}".strip()
            for name, r in zip(named, results, strict=True)
        }
        ready = all(v == "ok" for v in status.values())
        return JSONResponse({"ready": ready, "dependencies": status}, status_code=200 if ready else 503)

    return router
