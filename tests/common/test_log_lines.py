"""Log lines as they reach standard output."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator

import pytest
import structlog

from common.logging import configure


class _Writes(io.StringIO):
    """A stream that keeps each write it was given."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[str] = []

    def write(self, s: str) -> int:
        self.writes.append(s)
        return super().write(s)


@pytest.fixture
def info_logging() -> Iterator[None]:
    configure("tests", fmt="json", level="info")
    yield
    configure("tests", fmt="json", level="warning")


@pytest.mark.usefixtures("info_logging")
def test_each_line_reaches_stdout_whole_in_one_write(monkeypatch: pytest.MonkeyPatch) -> None:
    # Services run unbuffered: a line written in two parts costs two system calls and can be split by another
    # thread's line between its text and its newline.
    stream = _Writes()
    monkeypatch.setattr("sys.stdout", stream)
    structlog.get_logger("t").info("incident.received", reference="OSI-TEST01")
    structlog.get_logger("t").warning("consumer.transient_failure", retry_in=0.2)
    assert len(stream.writes) == 2
    assert all(w.endswith("\n") and w.count("\n") == 1 for w in stream.writes)
    assert [json.loads(w)["event"] for w in stream.writes] == ["incident.received", "consumer.transient_failure"]
