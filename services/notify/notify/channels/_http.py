"""How an HTTP provider's answer maps onto retryable and permanent failures (shared by Notify and webhooks)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import datetime
from email.utils import parsedate_to_datetime

import httpx

from common.events import Clock
from notify.channels.base import PermanentDeliveryError, RetryableDeliveryError

# 408 and 425 say "the request came at a bad moment"; 429 says "slow down". All deserve another try.
_RETRYABLE_4XX = frozenset({408, 425, 429})


@asynccontextmanager
async def client_for(client: httpx.AsyncClient | None) -> AsyncIterator[httpx.AsyncClient]:
    """The caller's pooled client if it gave one, else a client for this one request."""
    if client is not None:
        yield client
    else:
        async with httpx.AsyncClient() as own:
            yield own


def parse_retry_after(value: str | None, clock: Clock) -> float | None:
    """RFC 9110 Retry-After: delay-seconds or an HTTP-date. Returns seconds from now, never negative."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when: datetime = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        return None
    return max(0.0, (when - clock()).total_seconds())


def raise_for_status(response: httpx.Response, provider: str, clock: Clock) -> None:
    """Return quietly for 2xx; otherwise raise the delivery error the status deserves."""
    status = response.status_code
    if 200 <= status < 300:
        return
    reason = f"{provider} answered {status}{_error_summary(response)}"
    if status >= 500 or status in _RETRYABLE_4XX:
        raise RetryableDeliveryError(reason, parse_retry_after(response.headers.get("retry-after"), clock))
    raise PermanentDeliveryError(reason)


async def request(request: Callable[[], Awaitable[httpx.Response]], provider: str, clock: Clock) -> httpx.Response:
    """Run one request, turning transport failures into retryable errors. A timeout after a POST was sent may
    mean the provider did act: the retry can duplicate, which the stable message id absorbs (webhooks), or which
    the channel looks for before sending again (GOV.UK Notify)."""
    try:
        response = await request()
    except httpx.TimeoutException as exc:
        raise RetryableDeliveryError(f"{provider} timed out ({type(exc).__name__})") from exc
    except httpx.TransportError as exc:
        raise RetryableDeliveryError(f"{provider} unreachable ({type(exc).__name__})") from exc
    raise_for_status(response, provider, clock)
    return response


def _error_summary(response: httpx.Response) -> str:
    """GOV.UK Notify answers `{"errors": [{"error": ..., "message": ...}]}`; quote the first, briefly."""
    try:
        body = response.json()
    except ValueError:
        return ""
    errors = body.get("errors") if isinstance(body, dict) else None
    if isinstance(errors, list) and errors and isinstance(errors[0], dict):
        first = errors[0]
        return f": {first.get('error', '')} {first.get('message', '')}".rstrip()
    return ""
