"""Intake against the real database and broker: an app per test, in its own schema and topic prefix."""

from __future__ import annotations

import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

sys.path.insert(0, str(Path(__file__).parent))

from intake_support import settings_for  # noqa: E402

from intake.config import IntakeSettings  # noqa: E402
from intake.main import create_app  # noqa: E402


@pytest.fixture
def settings(stack: Any, isolation: str) -> IntakeSettings:
    return settings_for(stack, isolation)


@pytest.fixture
async def app(settings: IntakeSettings) -> AsyncIterator[FastAPI]:
    application = create_app(settings)
    async with application.router.lifespan_context(application):
        yield application


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://intake.test") as c:
        yield c




@pytest.fixture(scope="module")
async def shared_client(stack: Any) -> AsyncIterator[httpx.AsyncClient]:
    """One app for a module's tests that only read what they wrote: starting an app costs seconds."""
    name = "m" + uuid.uuid4().hex[:10]
    application = create_app(settings_for(stack, name))
    async with application.router.lifespan_context(application):
        transport = httpx.ASGITransport(app=application)
        async with httpx.AsyncClient(transport=transport, base_url="http://intake.test") as c:
            yield c
