"""A minimal service used by the backbone tests: it counts each event it handles in `effects`.

Counting (not a unique row) is deliberate: a second effect for one event would show up as n = 2.
Run as a script it is a worker process that the SIGTERM test can interrupt.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import Sequence

from common.consumer import BatchedHandler
from common.db import Connection, Migration
from common.events import CloudEvent
from common.runtime import Runtime, ServiceSpec
from common.settings import ServiceSettings

EFFECTS = Migration(
    "0001_effects",
    "CREATE TABLE effects (event_id text PRIMARY KEY, n integer NOT NULL);"
    "GRANT SELECT, INSERT, UPDATE ON effects TO @app_role@;",
)
POISON_MARK = "poison"


async def record_effect(event: CloudEvent, conn: Connection) -> None:
    if event.data.get("mark") == POISON_MARK:
        raise ValueError("this event is poison by design")
    delay = float(event.data.get("delay", 0))
    if delay:
        await asyncio.sleep(delay)
    await conn.execute(
        "INSERT INTO effects (event_id, n) VALUES ($1, 1) ON CONFLICT (event_id) DO UPDATE SET n = effects.n + 1",
        event.id,
    )


async def record_effects(events: Sequence[CloudEvent], conn: Connection) -> None:
    """`record_effect` for a batch at once (a `BatchedHandler`), with one statement."""
    if any(event.data.get("mark") == POISON_MARK for event in events):
        raise ValueError("this event is poison by design")
    await conn.execute(
        "INSERT INTO effects (event_id, n) SELECT e, count(*) FROM unnest($1::text[]) AS e GROUP BY e"
        " ON CONFLICT (event_id) DO UPDATE SET n = effects.n + excluded.n",
        [event.id for event in events],
    )


def settings_for(isolation: str, admin_dsn: str, bootstrap: str) -> ServiceSettings:
    return ServiceSettings(
        service_name="sample", db_schema=f"{isolation}_sample", database_url=admin_dsn,
        kafka_bootstrap_servers=bootstrap, topic_prefix=f"{isolation}.", outbox_poll_seconds=0.2,
    )


def sample_runtime(settings: ServiceSettings, *, batched: bool = False) -> Runtime:
    handler = BatchedHandler(record_effects) if batched else record_effect
    return Runtime(ServiceSpec(settings, [EFFECTS], handlers={"incidents.reported": handler}))


async def _worker(isolation: str, admin_dsn: str, bootstrap: str) -> None:
    runtime = sample_runtime(settings_for(isolation, admin_dsn, bootstrap))
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, runtime.stop_event.set)
    await runtime.start()
    print("started", flush=True)
    await runtime.stop_event.wait()
    await runtime.stop()
    print("stopped", flush=True)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    asyncio.run(_worker(*sys.argv[1:4]))
