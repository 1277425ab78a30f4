"""Helpers of the intake tests: keys, tokens, report bodies, media samples, and reading a topic."""

from __future__ import annotations

import asyncio
import base64
import copy
import json
import struct
import zlib
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import httpx
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from common.events import new_event
from common.tokens import issue_ack_token, issue_person_token
from common.topics import EventType, Topic, TopicNames
from intake.api.examples import REPORT_EXAMPLES
from intake.config import IntakeSettings, IntegrationKey, hash_key

KEY_A = "osk_test-key-for-school-a-0000000000000000000"
KEY_B = "osk_test-key-for-school-b-1111111111111111111"
KEY_A_OTHER = "osk_test-key-other-integration-school-a-22222"
SECRET = "test-token-secret-0123456789abcdef-0123456789"

INTEGRATIONS = [
    IntegrationKey(integration_id="cpoms-a", key_sha256=hash_key(KEY_A), schools=frozenset({"school-a"})),
    IntegrationKey(integration_id="cpoms-b", key_sha256=hash_key(KEY_B), schools=frozenset({"school-b"})),
    IntegrationKey(integration_id="filter-a", key_sha256=hash_key(KEY_A_OTHER), schools=frozenset({"school-a"})),
]


def settings_for(stack: Any, isolation: str, **overrides: Any) -> IntakeSettings:
    values: dict[str, Any] = {
        "database_url": stack.admin_dsn,
        "db_schema": f"{isolation}_intake",
        "kafka_bootstrap_servers": stack.bootstrap,
        "topic_prefix": f"{isolation}.",
        "topic_partitions": 1,
        "outbox_poll_seconds": 0.2,
        "token_secret": SECRET,
        "integrations": INTEGRATIONS,
    }
    values.update(overrides)
    return IntakeSettings(**values)


def report(**changes: Any) -> dict[str, Any]:
    body = copy.deepcopy(REPORT_EXAMPLES["inappropriate_access"])
    body["subjects"] = [{"kind": "pupil", "identifier": "UPN-A123", "name": "Tilly Example",
                         "date_of_birth": "2014-05-06T00:00:00", "year_group": "Year 6"}]
    body.update(changes)
    return body


def api_key(key: str = KEY_A) -> dict[str, str]:
    return {"X-API-Key": key}


def person(role: str = "dsl", school: str = "school-a", person_id: str = "p-1") -> dict[str, str]:
    token = issue_person_token(SECRET, person_id=person_id, role=role, school_id=school, ttl=timedelta(hours=1))
    return {"Authorization": f"Bearer {token}"}


def ack_link(incident_id: str, school: str = "school-a", role: str = "dsl", notification_id: str = "n-1") -> str:
    return issue_ack_token(SECRET, notification_id=notification_id, incident_id=incident_id, school_id=school,
                           recipient_role=role, ttl=timedelta(hours=4))


async def reported(client: httpx.AsyncClient, **changes: Any) -> str:
    response = await client.post("/v1/incidents", json=report(**changes), headers=api_key())
    assert response.status_code == 202, response.text
    return str(response.json()["incident_id"])


def tiny_png() -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\x00\xff\x00\x00"))
            + chunk(b"IEND", b""))


def tiny_jpeg() -> bytes:
    return b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00" + bytes(range(256)) + b"\xff\xd9"


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


async def read_events(
    bootstrap: str, topic: str, until: Callable[[list[dict[str, Any]]], bool], timeout: float = 40.0
) -> list[dict[str, Any]]:
    """Read a topic from the start until `until(events)` holds; the broker may have just restarted."""
    events: list[dict[str, Any]] = []
    deadline = asyncio.get_running_loop().time() + timeout
    while asyncio.get_running_loop().time() < deadline:
        consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                                    enable_auto_commit=False, group_id=None, metadata_max_age_ms=1000)
        try:
            await consumer.start()
            while asyncio.get_running_loop().time() < deadline:
                batches = await consumer.getmany(timeout_ms=500)
                for records in batches.values():
                    events.extend(json.loads(r.value) for r in records if r.value)
                if until(events):
                    return events
        except Exception:  # noqa: BLE001 - broker still starting: try again
            await asyncio.sleep(0.5)
        finally:
            await consumer.stop()
    raise AssertionError(f"timed out reading {topic}; saw {len(events)} events")


async def triaged(settings: IntakeSettings, client: httpx.AsyncClient, incident: str,
                  levels: list[list[str]], reminders: tuple[str, ...] = ()) -> None:
    """Publish triage's decision for the incident, and wait until intake's status shows it."""
    chain = [{"level": n, "ack_timeout": "PT15M", "repeat_every": "PT30M", "max_repeats": None,
              "policy_version": "p1",
              "recipients": [{"role": role, "channels": [{"kind": "email", "address": f"{role}@a.sch.uk"}]}
                             for role in roles]}
             for n, roles in enumerate(levels)]
    event = new_event(EventType.INCIDENT_TRIAGED, source="tests", subject=incident, schoolid="school-a", data={
        "incident_id": incident, "reference": "OSI-TEST00", "incident_class": "illegal", "urgency": "immediate",
        "risk_area": "content", "reasons": [], "policy_version": "p1", "chain": chain,
        "reminders": [{"code": code, "text": code.replace("_", " "), "owner_role": "dsl"} for code in reminders]})
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap_servers)
    await producer.start()
    try:
        await producer.send_and_wait(TopicNames(settings.topic_prefix).physical(Topic.INCIDENTS_TRIAGED.value),
                                     event.model_dump_json().encode(), key=incident.encode())
    finally:
        await producer.stop()
    for _ in range(300):
        status = (await client.get(f"/v1/incidents/{incident}", headers=api_key())).json()["status"]
        if status != "received":
            return
        await asyncio.sleep(0.05)
    raise AssertionError("intake never saw the triaged event")
