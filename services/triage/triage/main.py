"""The triage service: the app factory, its runtime (consumer + timers) and its entry point."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable
from datetime import datetime, timedelta

from fastapi import FastAPI

from common.db import load_migrations
from common.events import utc_now
from common.http import configure_logging, serve, service_app
from common.runtime import BackgroundLoop, Runtime, ServiceSpec
from common.woken_loop import run_woken_passes
from triage.config import TriageSettings
from triage.consumer import TriageHandlers
from triage.policy import PolicyBook, PolicyError
from triage.timers import FireReport, Timers

DESCRIPTION = """Classifies every reported incident, plans its escalation from the school's policy, and
keeps escalating (timers in PostgreSQL) until someone acknowledges. It has no API of its own beyond health
and metrics: it speaks only through events."""

Clock = Callable[[], datetime]


class TriageRuntime(Runtime):
    """The shared runtime plus triage's handlers, policy book and escalation timers."""

    def __init__(
        self, settings: TriageSettings, *, policies: PolicyBook | None = None, clock: Clock = utc_now,
        run_background: bool = True, consume: bool = True,
    ) -> None:
        # Policies are checked here, before anything starts: a bad file raises PolicyError naming where.
        self.policies = policies if policies is not None else settings.load_policies()
        self.clock = clock
        self.triage = TriageHandlers(
            self.policies, clock, reminder_min_period=timedelta(minutes=settings.reminder_min_period_minutes)
        )
        self.timers = Timers(
            lambda: self.pool, clock, batch=settings.timer_batch,
            grace=timedelta(seconds=settings.timer_grace_seconds), poll_seconds=settings.timer_poll_seconds,
        )
        self.stranded_signals_total = 0
        background: list[BackgroundLoop] = [self._timer_loop, self._stranded_signal_loop] if run_background else []
        super().__init__(ServiceSpec(
            settings=settings, migrations=load_migrations("triage.migrations"),
            handlers=self.triage.handlers() if consume else {}, background=background,
        ))

    async def _timer_loop(self, runtime: Runtime, stop: asyncio.Event) -> None:
        await self.timers.run(stop)

    async def _stranded_signal_loop(self, runtime: Runtime, stop: asyncio.Event) -> None:
        """Applies stranded early signals (`TriageHandlers.apply_stranded_signals`) at the timers' pace."""

        async def one_pass() -> bool:
            await self.apply_stranded_signals()
            return False  # all of them at once: nothing more until the next pass

        await run_woken_passes(
            stop, one_pass, pool=lambda: self.pool, channel=None, poll_seconds=self.timers.poll_seconds,
            failure_event="triage.stranded_signals_failed",
        )

    async def fire_due(self, now: datetime | None = None) -> FireReport:
        return await self.timers.fire_due(now)

    async def apply_stranded_signals(self) -> int:
        async with self.pool.acquire() as conn, conn.transaction():
            applied = await self.triage.apply_stranded_signals(conn)
        self.stranded_signals_total += applied
        return applied

    def metrics(self) -> dict[str, float]:
        return {**super().metrics(), **self.timers.metrics.as_dict(),
                "stranded_signals_applied_total": self.stranded_signals_total}


def create_app(settings: TriageSettings | None = None, *, clock: Clock = utc_now) -> FastAPI:
    settings = settings or TriageSettings()
    runtime = TriageRuntime(settings, clock=clock)
    app = service_app(runtime, title="Online-safety incident triage", description=DESCRIPTION)
    app.state.settings = settings
    return app


def run() -> None:
    settings = TriageSettings()
    configure_logging(settings)
    try:
        app = create_app(settings)
    except PolicyError as exc:
        print(f"triage: refusing to start: {exc}", file=sys.stderr)
        raise SystemExit(2) from exc
    serve(app, settings)
