"""The whole system started as `make run` starts it: a report goes in, a DSL's email comes out, audit keeps it.

Checked from the outside only: HTTP answers, the SMTP sink's files and the audit log's verification.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterator

import httpx
import pytest

from devstack.launch import launch
from devstack.smtp_sink import read_messages

API_KEY = "e2e-integration-key-" + "x" * 24
PUPIL_NAME = "Jasmine Okonkwo-Reid"


@pytest.fixture(scope="module")
def system() -> Iterator[dict]:
    integrations = [{"integration_id": "cpoms-e2e", "key_sha256": hashlib.sha256(API_KEY.encode()).hexdigest(),
                     "schools": ["school-a"]}]
    running = launch({"INTAKE_INTEGRATIONS": json.dumps(integrations)}, ready_timeout=120)
    try:
        ports = {name.upper(): number for name, number in running.ports.items()}
        yield {"var": running.var, "state": running.state, "ports": ports, "mail": running.mail_dir}
    finally:
        running.stop(timeout=60)


def _report() -> dict:
    return {
        "school_id": "school-a",
        "reporter": {"role": "class teacher"},
        "occurred_at": "2026-11-23T10:15:00+00:00",
        "where": "Year 6 classroom",
        "category": "youth_produced_sexual_imagery",
        "risk_area": "conduct",
        "subjects": [{"kind": "pupil", "identifier": "UPN-A1234", "name": PUPIL_NAME, "year_group": "Year 6"}],
        "description": f"{PUPIL_NAME} shared a nude image of herself in the class group chat.",
        "child_at_immediate_risk": False,
        "evidence": {"device": "pupil's own phone", "location": "headteacher's safe", "isolated_from_network": True},
    }


def _wait_for(check, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        time.sleep(0.25)
    raise AssertionError(f"timed out waiting for {what}")


def test_every_service_is_ready(system):
    for name in ("INTAKE", "TRIAGE", "NOTIFY", "AUDIT", "WEB"):
        answer = httpx.get(f"http://127.0.0.1:{system['ports'][name]}/readyz", timeout=10)
        assert answer.status_code == 200, (name, answer.text)


def test_a_sexting_report_reaches_the_dsl_by_email_without_the_childs_name(system):
    intake = f"http://127.0.0.1:{system['ports']['INTAKE']}"
    answer = httpx.post(f"{intake}/v1/incidents", json=_report(), headers={"X-API-Key": API_KEY}, timeout=10)
    assert answer.status_code == 202, answer.text
    incident_id = answer.json()["incident_id"]

    def dsl_mail():
        return [m for m in read_messages(system["mail"]) if "dsl@school-a.example" in str(m.get("To", ""))]

    messages = _wait_for(dsl_mail, 60, "the DSL's email in the SMTP sink")
    subject = str(messages[0]["Subject"])
    body = messages[0].get_body(preferencelist=("plain",)).get_content()
    for fragment in ("Jasmine", "Okonkwo", "UPN-A1234", "nude image"):
        assert fragment not in subject and fragment not in body

    def moved_on():  # intake's status comes from triage's events, which may trail the email a little
        status = httpx.get(f"{intake}/v1/incidents/{incident_id}", headers={"X-API-Key": API_KEY}, timeout=10)
        assert status.status_code == 200
        return status.json()["status"] != "received"

    _wait_for(moved_on, 30, "intake's status to move on from 'received'")
