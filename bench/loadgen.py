"""A lean HTTP/1.1 load generator: keep-alive connections on raw asyncio streams.

httpx costs a millisecond or so of CPU per request, which on a 2-core machine made the load generator,
not the server, the bottleneck (a bare FastAPI endpoint "peaked" at 250-700 requests/s). This client
sends one prepared request over and over and reads each answer by its Content-Length, a few tens of
microseconds per request, so the figures measure the server. It speaks just enough HTTP for that:
POST with a fixed body, responses with Content-Length (what uvicorn sends for JSON), keep-alive. A header value
may hold `{seq}`, replaced in each request by a value unique to it (an Idempotency-Key per report).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit


@dataclass(frozen=True)
class Load:
    per_second: float  # answers with the expected status per second of the window
    p50_ms: float
    p99_ms: float
    errors: int  # answers with another status, or connections that failed
    answered: int = 0  # every answer in the whole run, warm-up and drain included (for CPU per request)


def percentile_ms(sorted_seconds: list[float], q: float) -> float:
    if not sorted_seconds:
        return float("nan")
    return sorted_seconds[min(len(sorted_seconds) - 1, int(q * len(sorted_seconds)))] * 1000


SEQ = "{seq}"


class Connection:
    """One keep-alive connection that sends the same request and returns each answer's status."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes) -> None:
        self._reader, self._writer, self._request = reader, writer, request
        # With a `{seq}` placeholder: the parts around it, and this connection's own unique values.
        self._parts = request.split(SEQ.encode(), 1)
        prefix = uuid.uuid4().hex[:12]
        self._seq = (f"{prefix}-{n}".encode() for n in itertools.count())

    @classmethod
    async def open(cls, url: str, path: str, body: Mapping[str, Any], headers: Mapping[str, str]) -> Connection:
        parts = urlsplit(url)
        reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
        payload = json.dumps(body).encode()
        head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        request = (
            f"POST {path} HTTP/1.1\r\nHost: {parts.netloc}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(payload)}\r\n{head}\r\n"
        ).encode() + payload
        return cls(reader, writer, request)

    async def send(self) -> int:
        status, _ = await self.exchange()
        return status

    async def exchange(self) -> tuple[int, bytes]:
        """Send the request once; the answer's status and body."""
        if len(self._parts) == 2:
            self._writer.write(self._parts[0] + next(self._seq) + self._parts[1])
        else:
            self._writer.write(self._request)
        status_line = await self._reader.readline()
        if not status_line:
            raise ConnectionError("the server closed the connection")
        length = 0
        while (line := await self._reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        body = await self._reader.readexactly(length) if length else b""
        return int(status_line.split()[1]), body

    async def close(self) -> None:
        self._writer.close()
        await self._writer.wait_closed()

    async def close_quietly(self) -> None:
        """Close, whatever state the connection is in (the server may have closed it first)."""
        with contextlib.suppress(ConnectionError, OSError):
            await self.close()


async def closed_loop(
    url: str, path: str, body: Mapping[str, Any], headers: Mapping[str, str], *,
    concurrency: int, seconds: float, expect: int, warmup: float = 1.0,
) -> Load:
    """`concurrency` connections, each sending the next request as soon as the last is answered."""
    loop = asyncio.get_running_loop()
    connections = [await Connection.open(url, path, body, headers) for _ in range(concurrency)]
    latencies: list[float] = []
    errors = answered = 0
    start = loop.time() + warmup
    end = start + seconds

    async def worker(conn: Connection) -> None:
        nonlocal errors, answered
        while (t0 := loop.time()) < end:
            status = await conn.send()
            t1 = loop.time()
            answered += 1
            if t0 >= start and t1 <= end:
                if status == expect:
                    latencies.append(t1 - t0)
                else:
                    errors += 1

    try:
        await asyncio.gather(*(worker(c) for c in connections))
    finally:
        await asyncio.gather(*(c.close() for c in connections), return_exceptions=True)
    latencies.sort()
    return Load(len(latencies) / seconds, percentile_ms(latencies, 0.5), percentile_ms(latencies, 0.99), errors,
                answered)


async def steady_rate(
    url: str, path: str, body: Mapping[str, Any], headers: Mapping[str, str], *,
    rate: float, seconds: float, expect: int, connections: int = 64,
) -> Load:
    """Requests on a fixed schedule (open loop) over a pool of connections; each latency is counted from
    the request's scheduled time, so waiting for a free connection counts as waiting."""
    loop = asyncio.get_running_loop()
    idle: asyncio.Queue[Connection] = asyncio.Queue()
    pool = [await Connection.open(url, path, body, headers) for _ in range(connections)]
    for conn in pool:
        idle.put_nowait(conn)
    latencies: list[float] = []
    errors = 0

    async def one(at: float) -> None:
        nonlocal errors
        conn = await idle.get()
        try:
            status = await conn.send()
        finally:
            idle.put_nowait(conn)
        if status == expect:
            latencies.append(loop.time() - at)
        else:
            errors += 1

    start = loop.time() + 0.1
    tasks = []
    try:
        for i in range(int(rate * seconds)):
            at = start + i / rate
            if (delay := at - loop.time()) > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(at)))
        await asyncio.gather(*tasks)
        elapsed = loop.time() - start
    finally:
        await asyncio.gather(*(c.close() for c in pool), return_exceptions=True)
    latencies.sort()
    return Load(len(latencies) / elapsed, percentile_ms(latencies, 0.5), percentile_ms(latencies, 0.99), errors,
                len(tasks))
