"""While intake's database is down or restarting, a request is answered 503 with Retry-After (a client's cue to
retry with the same Idempotency-Key), not 500 as if intake were broken. Found by the chaos run (tests/chaos)."""

from __future__ import annotations

import asyncpg
import httpx
import pytest
from fastapi import FastAPI

from intake.problems import install


def _app(error: Exception) -> FastAPI:
    app = FastAPI()
    install(app)

    @app.post("/v1/incidents")
    async def report() -> None:
        raise error

    return app


@pytest.mark.parametrize("error", [
    ConnectionRefusedError(111, "Connection refused"),
    ConnectionResetError(104, "Connection reset by peer"),
    asyncpg.exceptions.ConnectionDoesNotExistError("connection was closed in the middle of operation"),
    asyncpg.exceptions.CannotConnectNowError("the database system is starting up"),
    TimeoutError(),
], ids=type)
async def test_a_database_outage_is_answered_503_with_retry_after(error):
    transport = httpx.ASGITransport(app=_app(error), raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://intake") as client:
        answer = await client.post("/v1/incidents", json={})
    assert answer.status_code == 503
    assert answer.headers["Retry-After"] == "2"
    assert answer.headers["content-type"] == "application/problem+json"
    assert "nothing was accepted" in answer.json()["detail"]


async def test_a_bug_is_still_answered_500():
    transport = httpx.ASGITransport(app=_app(KeyError("x")), raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://intake") as client:
        answer = await client.post("/v1/incidents", json={})
    assert answer.status_code == 500
