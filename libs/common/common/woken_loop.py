"""A background loop woken by PostgreSQL LISTEN/NOTIFY, with polling as the safety net.

The outbox relay and notify's delivery loop both run "a pass, then wait for a NOTIFY at commit or the
poll interval", back off while a dependency is down, and keep one LISTEN connection alive across
database restarts. They share this one implementation.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import asyncpg
import structlog

from common.aio import cancelled_from_inside, sleep_unless_stopped, wait_for_either

log = structlog.get_logger(__name__)

# One pass of work; True means "there may be more right now: run again without waiting".
Pass = Callable[[], Awaitable[bool]]


async def run_woken_passes(
    stop: asyncio.Event,
    one_pass: Pass,
    *,
    pool: Callable[[], asyncpg.Pool],
    channel: str | None,
    poll_seconds: float,
    failure_event: str,
) -> None:
    """Run `one_pass` until `stop`; between passes wait for a NOTIFY on `channel` or `poll_seconds`."""
    wake = asyncio.Event()
    listener = asyncio.create_task(listen(pool, channel, wake, stop)) if channel else None
    backoff = 0.2
    try:
        while not stop.is_set():
            wake.clear()  # a NOTIFY during the pass sets it again: no wake-up is lost
            try:
                more = await one_pass()
                backoff = 0.2
            except (Exception, asyncio.CancelledError) as exc:  # noqa: BLE001 - must outlive broker and database outages
                if isinstance(exc, asyncio.CancelledError) and not cancelled_from_inside():
                    raise
                log.warning(failure_event, error=str(exc) or type(exc).__name__, retry_in=backoff)
                await sleep_unless_stopped(stop, backoff)
                backoff = min(backoff * 2, 5.0)
                continue
            if not more:
                await wait_for_either(stop, wake, poll_seconds)
    finally:
        if listener is not None:
            listener.cancel()
            await asyncio.gather(listener, return_exceptions=True)


async def listen(pool: Callable[[], asyncpg.Pool], channel: str, wake: asyncio.Event, stop: asyncio.Event) -> None:
    """Hold a LISTEN connection that sets `wake`; reconnect if the database goes away."""

    def on_notify(*_: object) -> None:
        wake.set()

    while not stop.is_set():
        try:
            async with pool().acquire() as conn:
                await conn.add_listener(channel, on_notify)
                try:
                    while not conn.is_closed():  # noqa: ASYNC110 - also watching the connection
                        await sleep_unless_stopped(stop, 1.0)
                        if stop.is_set():
                            return
                finally:
                    if not conn.is_closed():
                        await conn.remove_listener(channel, on_notify)
        except Exception:  # noqa: BLE001 - polling covers us until LISTEN is back
            await sleep_unless_stopped(stop, 1.0)
