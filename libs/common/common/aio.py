"""Small asyncio helpers for loops that must stop promptly on shutdown."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable
from typing import Any, TypeVar

T = TypeVar("T")


async def sleep_unless_stopped(stop: asyncio.Event, seconds: float) -> None:
    """Sleep for `seconds`, returning early when `stop` is set."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), timeout=seconds)


async def wait_for_either(stop: asyncio.Event, wake: asyncio.Event, seconds: float) -> None:
    """Return when either event is set or after `seconds`."""
    waiters = [asyncio.create_task(stop.wait()), asyncio.create_task(wake.wait())]
    try:
        await asyncio.wait(waiters, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waiters:
            w.cancel()


async def within(seconds: float, awaitable: Awaitable[T]) -> T:
    """Await `awaitable` for at most `seconds`, then raise TimeoutError without waiting for it to wind down.

    `asyncio.wait_for` waits for the cancelled work to finish, and a Kafka client cancelled while talking
    to a broker that is restarting can take far longer than the timeout to close (seen: the broker watch
    stuck for minutes). The abandoned task is cancelled and left to finish on its own. Work that was cancelled
    from inside (aiokafka does that to its own futures when a connection drops) raises ConnectionError, not
    CancelledError: a CancelledError would end the caller's loop as if it were being shut down."""
    task = asyncio.ensure_future(awaitable)
    done, _ = await asyncio.wait({task}, timeout=seconds)
    if task in done:
        if task.cancelled():  # from inside: aiokafka cancels its own futures when a broker goes away
            raise ConnectionError("cancelled inside the client (the connection went away)")
        return task.result()
    task.cancel()
    task.add_done_callback(_consume_outcome)
    raise TimeoutError(f"gave up after {seconds:.0f} s")


def _consume_outcome(task: asyncio.Future[Any]) -> None:
    if not task.cancelled():
        task.exception()  # retrieved, so asyncio does not log "exception was never retrieved"


def cancelled_from_inside() -> bool:
    """Whether a CancelledError being handled came from a library cancelling its own futures (aiokafka does when
    a broker connection drops) rather than from this task being cancelled. Loops that must outlive a broker
    restart treat the first as a failure to retry, and let the second end them."""
    task = asyncio.current_task()
    return task is not None and task.cancelling() == 0
