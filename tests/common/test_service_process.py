"""What every service process does once started: its cyclic garbage collector is tuned (common.http.serve)."""

from __future__ import annotations

import gc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
from fastapi import FastAPI
from pydantic import ValidationError

from common.http import tune_gc_once_started
from common.settings import ServiceSettings


def test_the_youngest_generation_threshold_is_a_setting_no_lower_than_cpythons_default() -> None:
    assert ServiceSettings().gc_gen0_threshold == 10_000
    with pytest.raises(ValidationError, match="gc_gen0_threshold"):
        ServiceSettings(gc_gen0_threshold=10)


async def test_the_collector_is_tuned_once_the_service_has_started_and_not_before() -> None:
    seen: list[tuple[str, int]] = []

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        seen.append(("starting", gc.get_threshold()[0]))
        yield
        seen.append(("stopping", gc.get_threshold()[0]))

    app = FastAPI(lifespan=lifespan)
    before = gc.get_threshold()
    tune_gc_once_started(app, 25_000)
    try:
        async with app.router.lifespan_context(app):
            seen.append(("serving", gc.get_threshold()[0]))
            assert gc.get_freeze_count() > 0  # what start-up built is out of the collector's sight
    finally:
        gc.set_threshold(*before)
        gc.unfreeze()
    assert seen == [("starting", before[0]), ("serving", 25_000), ("stopping", 25_000)]
