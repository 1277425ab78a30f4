"""Session-wide real servers and per-test isolation (a schema and topic prefix of each test's own)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from support.stack import ContainerStack, EmbeddedStack, start_stack

from common.logging import configure

configure("tests", fmt="json", level="warning")


@pytest.fixture(scope="session")
def stack() -> Iterator[EmbeddedStack | ContainerStack]:
    s = start_stack()
    try:
        yield s
    finally:
        s.stop()


@pytest.fixture
def isolation() -> str:
    """A fresh name for this test: used as its schema suffix and its topic prefix."""
    return "t" + uuid.uuid4().hex[:10]
