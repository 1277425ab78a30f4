"""Session-wide real servers and per-test isolation (a schema and topic prefix of each test's own)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from support.stack import EmbeddedStack, docker_engine_answers, start_embedded

from common.logging import configure

configure("tests", fmt="json", level="warning")


@pytest.fixture(scope="session")
def stack() -> Iterator[EmbeddedStack]:
    if docker_engine_answers():  # pragma: no cover - these machines have no engine
        raise RuntimeError("Docker engine found: run the compose stack (see README) and set the URLs")
    s = start_embedded()
    try:
        yield s
    finally:
        s.stop()


@pytest.fixture
def isolation() -> str:
    """A fresh name for this test: used as its schema suffix and its topic prefix."""
    return "t" + uuid.uuid4().hex[:10]
