"""A steady load of realistic incident reports, sent to intake as an integration does: each report with its
own Idempotency-Key, retried while intake (or its database) is away, and counted once answered 202."""

from __future__ import annotations

import asyncio
import copy
import hashlib
import json
import random
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import httpx

API_KEY = "chaos-integration-key-" + "x" * 24
SCHOOLS = ("school-a", "school-b", "school-c")
RETRY_FOR_SECONDS = 120.0  # an integration keeps a report until it is accepted; our bound on that

_EVIDENCE = {"device": "school laptop asset 4471", "location": "locked cupboard, head's office",
             "isolated_from_network": True}
# One of each kind of report the schools' procedures name (DESIGN.md), with a pupil named in the description
# so that the run also shows the name never reaches a message (checked by notify's own tests; here it is load).
REPORTS: tuple[dict[str, Any], ...] = (
    {"category": "child_sexual_abuse_imagery", "risk_area": "content", "where": "ICT suite",
     "subjects": [{"kind": "unknown"}],
     "description": "Indecent images of children found on a shared laptop during a routine check."},
    {"category": "youth_produced_sexual_imagery", "risk_area": "conduct", "where": "Year 9 group chat",
     "subjects": [{"kind": "pupil", "identifier": "UPN-B456", "name": "Ava Lindqvist", "age": 14}],
     "description": "Ava Lindqvist says an image of her is being shared in a group chat. Not viewed by staff."},
    {"category": "inappropriate_access_accidental", "risk_area": "content", "where": "ICT suite",
     "subjects": [{"kind": "pupil", "identifier": "UPN-A123", "year_group": "Year 6"}],
     "description": "A pupil opened a gambling site by mistake and told the teacher at once."},
    {"category": "cyberbullying", "risk_area": "conduct", "where": "class messaging app",
     "subjects": [{"kind": "pupil", "identifier": "UPN-C789", "year_group": "Year 8"}],
     "description": "Repeated unkind messages about a pupil posted in the class messaging app."},
    {"category": "lost_or_stolen_equipment", "risk_area": "commerce", "where": "staff car park",
     "subjects": [{"kind": "staff"}], "description": "An unencrypted school laptop was stolen from a car."},
    {"category": "virus", "risk_area": "commerce", "where": "school office",
     "subjects": [{"kind": "staff"}], "description": "The office PC shows a ransom note; files will not open."},
    {"category": "staff_contact_outside_agreed_channels", "risk_area": "contact", "where": "social media",
     "subjects": [{"kind": "staff"}],
     "description": "A member of staff has been messaging a pupil on a personal social media account."},
    {"category": "online_grooming", "risk_area": "contact", "where": "online game chat",
     "subjects": [{"kind": "pupil", "identifier": "UPN-D246", "age": 11}], "child_at_immediate_risk": True,
     "description": "An adult in a game chat asked a pupil to meet after school and keep it secret."},
)


def integrations_env() -> str:
    """INTAKE_INTEGRATIONS for the stack: our key, allowed to report for every school of the load."""
    return json.dumps([{"integration_id": "chaos", "key_sha256": hashlib.sha256(API_KEY.encode()).hexdigest(),
                        "schools": list(SCHOOLS)}])


def report(rng: random.Random) -> dict[str, Any]:
    body = copy.deepcopy(rng.choice(REPORTS))
    return {"school_id": rng.choice(SCHOOLS), "reporter": {"role": "class teacher"},
            "occurred_at": "2026-11-23T09:30:00+00:00", "evidence": dict(_EVIDENCE), **body}


@dataclass
class LoadFigures:
    sent: int = 0
    accepted: dict[str, float] = field(default_factory=dict)  # incident id -> wall time of the 202
    replayed: int = 0  # a retry answered with the first attempt's incident (Idempotent-Replayed)
    retries: int = 0
    refused: dict[int, int] = field(default_factory=dict)  # final non-202 status -> count (0: never answered)
    given_up: int = 0


class SteadyLoad:
    """Reports at `rate` per second (open loop: a slow intake does not slow the schedule)."""

    def __init__(self, intake_url: str, rate: float, rng: random.Random, in_flight: int = 64) -> None:
        self._url = intake_url
        self._rate = rate
        self._rng = rng
        self._limit = asyncio.Semaphore(in_flight)
        self.figures = LoadFigures()

    async def run(self, stop: asyncio.Event) -> None:
        tasks: set[asyncio.Task[None]] = set()
        limits = httpx.Limits(max_connections=64, max_keepalive_connections=32)
        async with httpx.AsyncClient(base_url=self._url, timeout=15.0, limits=limits) as client:
            start = time.monotonic()
            i = 0
            while not stop.is_set():
                due = start + i / self._rate
                delay = due - time.monotonic()
                if delay > 0:
                    try:
                        await asyncio.wait_for(stop.wait(), delay)
                        break
                    except TimeoutError:
                        pass
                task = asyncio.create_task(self._one(client, report(self._rng)))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
                i += 1
            if tasks:
                await asyncio.gather(*tasks)

    async def _one(self, client: httpx.AsyncClient, body: dict[str, Any]) -> None:
        headers = {"X-API-Key": API_KEY, "Idempotency-Key": str(uuid.uuid4())}
        self.figures.sent += 1
        deadline = time.monotonic() + RETRY_FOR_SECONDS
        status = 0
        async with self._limit:
            while True:
                try:
                    answer = await client.post("/v1/incidents", json=body, headers=headers)
                    status = answer.status_code
                    if status == 202:
                        self.figures.accepted[answer.json()["incident_id"]] = time.time()
                        if answer.headers.get("Idempotent-Replayed") == "true":
                            self.figures.replayed += 1
                        return
                    if status < 500 and status != 429:
                        break  # our report is wrong: retrying will not help
                except httpx.HTTPError:
                    status = 0
                if time.monotonic() > deadline:
                    self.figures.given_up += 1
                    break
                self.figures.retries += 1
                await asyncio.sleep(1.0)
        self.figures.refused[status] = self.figures.refused.get(status, 0) + 1
