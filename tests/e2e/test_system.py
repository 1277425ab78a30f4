"""The whole system started as `make run` starts it: a report goes in, a DSL's email comes out, audit keeps it.

Checked from the outside only: HTTP answers, the SMTP sink's files and the audit log's verification.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from devstack.ports import free_port
from devstack.runfiles import wait_ready
from devstack.smtp_sink import read_messages

API_KEY = "e2e-integration-key-" + "x" * 24
PUPIL_NAME = "Jasmine Okonkwo-Reid"


@pytest.fixture(scope="module")
def system() -> Iterator[dict]:
    var = Path(tempfile.mkdtemp(prefix="ose-e2e-"))
    var.chmod(0o755)  # noqa: S103 - PostgreSQL runs as its own OS user and must reach its data dir
    ports = {name: free_port() for name in ("POSTGRES", "BROKER", "SMTP", "INTAKE", "TRIAGE", "NOTIFY", "AUDIT")}
    env = {
        **os.environ,
        "DEVSTACK_VAR_DIR": str(var),
        **{f"DEVSTACK_{name}_PORT": str(port) for name, port in ports.items()},
        "INTAKE_INTEGRATIONS": json.dumps(
            [{"integration_id": "cpoms-e2e", "key_sha256": hashlib.sha256(API_KEY.encode()).hexdigest(),
              "schools": ["school-a"]}]
        ),
    }
    for inherited in ("DATABASE_URL", "KAFKA_BOOTSTRAP_SERVERS", "SMTP_HOST", "SMTP_PORT"):
        env.pop(inherited, None)
    proc = subprocess.Popen([sys.executable, "-m", "devstack", "run"], env=env, start_new_session=True)
    try:
        state = wait_ready(var, timeout=120)
        yield {"var": var, "state": state, "ports": ports, "mail": Path(state["mail_dir"])}
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)


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
    for name in ("INTAKE", "TRIAGE", "NOTIFY", "AUDIT"):
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

    status = httpx.get(f"{intake}/v1/incidents/{incident_id}", headers={"X-API-Key": API_KEY}, timeout=10)
    assert status.status_code == 200
    assert status.json()["status"] != "received"
