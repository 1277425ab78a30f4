"""Issue 3, point 1: a report is accepted (202) while the broker is down, and published when it returns."""

from __future__ import annotations

from typing import Any

import httpx
from intake_support import api_key, read_events, report

from intake.config import IntakeSettings


async def test_report_is_accepted_while_broker_is_down_and_published_after_it_returns(
    stack: Any, client: httpx.AsyncClient, settings: IntakeSettings
) -> None:
    stack.stop_broker()
    try:
        response = await client.post("/v1/incidents", json=report(), headers=api_key())
        assert response.status_code == 202
        incident = response.json()["incident_id"]
        assert (await client.get(f"/v1/incidents/{incident}", headers=api_key())).json()["status"] == "received"
    finally:
        stack.start_broker()
    events = await read_events(settings.kafka_bootstrap_servers, f"{settings.topic_prefix}incidents.reported",
                               lambda es: any(e["subject"] == incident for e in es), timeout=60)
    assert [e["data"]["incident_id"] for e in events if e["subject"] == incident] == [incident]
