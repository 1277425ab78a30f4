"""The small chaos run: the whole stack as `make run` starts it, under a steady load of reports, while the
broker, PostgreSQL and every service are each killed with SIGKILL once, at random moments. Checked from the
outside (SMTP sink, outboxes, audit log and its verification): nothing lost, nothing twice, and a repeated
email only where a notify kill explains it. `make chaos` is the long version."""

from __future__ import annotations

import asyncio

from chaos.kill import COMPONENTS
from chaos.run import ChaosConfig, run
from chaos.table import render


def test_killing_each_part_once_under_load_loses_nothing_and_repeats_nothing():
    config = ChaosConfig(duration=75, rate=3, kills=len(COMPONENTS), seed=8, drain_timeout=150)
    result = asyncio.run(run(config))
    table = "\n".join(render(result))
    print(table)

    assert sorted(k.component for k in result.kills) == sorted(COMPONENTS), table
    assert result.accepted > 0.8 * config.rate * config.duration, table
    assert result.notifications_requested >= result.accepted, table
    assert result.reports_lost == 0, table
    assert result.reports_triaged_twice == 0, table
    assert result.notifications_lost == 0, table
    assert result.audit_gaps == 0 and result.audit_duplicates == 0, table
    assert result.chain_problems == [], table
    assert result.dead_letters == 0, table
    for component, repeats in result.duplicates_by_component.items():
        assert repeats <= (result.kills_of("notify") if component == "notify" else 0), table
    assert result.failures == [], table
