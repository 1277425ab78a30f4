"""structlog configuration: JSON lines with context, and redaction of pupil-identifying data.

Redaction works twice over: keys that name pupil-identifying fields are dropped wherever they
appear, and while an event is handled every sensitive value found in it (a pupil's name, a date of
birth, the free-text description) is scrubbed from every string of every log line, even one that
a careless `log.info("x", text=f"...{name}...")` built by hand.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator, MutableMapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from contextvars import ContextVar
from typing import Any

import structlog

from common.events import CloudEvent
from common.incident import SENSITIVE_KEYS, sensitive_values

REDACTED = "[redacted]"
_sensitive: ContextVar[frozenset[str]] = ContextVar("sensitive_values", default=frozenset())


def _scrub(value: Any, secrets: tuple[str, ...]) -> Any:
    if isinstance(value, str):
        for secret in secrets:
            if secret in value:
                value = value.replace(secret, REDACTED)
        return value
    if isinstance(value, dict):
        return {k: REDACTED if k in SENSITIVE_KEYS else _scrub(v, secrets) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_scrub(v, secrets) for v in value]
    return value


def scrubbed(text: str, values: set[str]) -> str:
    """`text` with each of these values (longest first) replaced by [redacted]: for text that leaves the process
    other than as a log line, such as a dead letter's error header."""
    result: str = _scrub(text, tuple(sorted(values, key=len, reverse=True)))
    return result


def redact(_: Any, __: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """structlog processor: drop sensitive keys and scrub known sensitive values."""
    secrets = _sensitive.get()
    # Longest first, so a full name is replaced before its parts (a tuple: a frozenset would lose the order,
    # and "Al Smith" could lose "Smith" first and leave "Al" in the line).
    ordered = tuple(sorted(secrets, key=len, reverse=True))
    for key in list(event_dict):
        if key in SENSITIVE_KEYS:
            event_dict[key] = REDACTED
        else:
            event_dict[key] = _scrub(event_dict[key], ordered)
    return event_dict


class _StdoutLogger:
    """Writes each line to whatever `sys.stdout` is at that moment.

    structlog's PrintLogger keeps the stream it was given; if that was a temporary one (pytest's
    capture, a redirected stdout) every later log call raises "I/O operation on closed file", and a
    loop that logs its own failures then dies of it.
    """

    def msg(self, message: str) -> None:
        # One write with its newline: `print` writes the line and the newline separately, and the services run
        # unbuffered (PYTHONUNBUFFERED), so that was two system calls a line.
        out = sys.stdout
        out.write(message + "\n")
        out.flush()

    debug = info = warning = warn = error = critical = exception = fatal = log = msg


def _stdout_logger(*_: Any) -> _StdoutLogger:
    return _STDOUT_LOGGER


_STDOUT_LOGGER = _StdoutLogger()


def event_context(event: CloudEvent) -> AbstractContextManager[None]:
    """Bind the event's ids to every log line and arm redaction with the values it carries."""
    return _handling(sensitive_values(event.data), event_id=event.id, incident_id=event.subject,
                     school=event.schoolid, event_type=event.type.value)


def events_context(events: Sequence[CloudEvent]) -> AbstractContextManager[None]:
    """`event_context` for a batch handled at once: redaction armed with the values every event carries, and the
    batch's size bound to each log line (one event's ids would mislabel the others)."""
    return _handling(set().union(*(sensitive_values(e.data) for e in events)), events=len(events))


@contextmanager
def _handling(found: set[str], **context: Any) -> Iterator[None]:
    """Runs for every event or batch a service handles, so it binds and resets the context variables by token
    (structlog's `bound_contextvars` first copies the whole context to find what to restore)."""
    token = _sensitive.set(_sensitive.get() | found) if found else None
    bound = structlog.contextvars.bind_contextvars(**context)
    try:
        yield
    finally:
        structlog.contextvars.reset_contextvars(**bound)
        if token is not None:
            _sensitive.reset(token)


@contextmanager
def sensitive(values: set[str]) -> Iterator[None]:
    """Scrub these values from log lines in this block (e.g. while handling an HTTP report)."""
    token = _sensitive.set(_sensitive.get() | frozenset(v for v in values if v))
    try:
        yield
    finally:
        _sensitive.reset(token)


def configure(service: str, *, fmt: str = "json", level: str = "info") -> None:
    renderer: Any = (
        structlog.dev.ConsoleRenderer(colors=False) if fmt == "console" else structlog.processors.JSONRenderer()
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            redact,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelNamesMapping()[level.upper()]),
        logger_factory=_stdout_logger,
        cache_logger_on_first_use=False,
    )
    structlog.contextvars.bind_contextvars(service=service)
