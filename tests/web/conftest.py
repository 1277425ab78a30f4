"""The browser tests' system: `make run`'s stack on free ports, with two schools' policies, and headless Chromium
(Debian's package) driven by Playwright. One system and one browser per module: module scope, because sync
Playwright keeps an event loop running in this thread until it stops, and async tests after it need the thread."""

from __future__ import annotations

import hashlib
import json
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from playwright.sync_api import Browser, Playwright, sync_playwright

from devstack.launch import LaunchedStack, launch
from triage.policy import DEFAULT_POLICY_FILE

API_KEY = "web-e2e-integration-key-" + "x" * 24
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
ESCALATION_MINUTES = 1  # school-a's sexting chain moves to the deputy DSL after one unacknowledged minute


def _policy(school_id: str, name: str) -> dict:
    text = DEFAULT_POLICY_FILE.read_text().replace("school-a.example", f"{school_id}.example")
    policy = yaml.safe_load(text)
    policy["school_id"] = school_id
    policy["school_name"] = name
    policy["contacts"]["safeguarding_governor"] = {
        "name": "Safeguarding governor", "channels": [{"kind": "email", "address": f"governor@{school_id}.example"}]}
    policy["chains"]["youth_produced_sexual_imagery"]["levels"][0]["ack_timeout_minutes"] = ESCALATION_MINUTES
    return policy


@pytest.fixture(scope="module")
def system() -> Iterator[LaunchedStack]:
    policies = Path(tempfile.mkdtemp(prefix="ose-web-policies-"))
    for school_id, name in (("school-a", "Alder Primary School"), ("school-b", "Birch Academy")):
        (policies / f"{school_id}.yaml").write_text(yaml.safe_dump(_policy(school_id, name), sort_keys=False))
    integrations = [{"integration_id": "cpoms-web", "key_sha256": hashlib.sha256(API_KEY.encode()).hexdigest(),
                     "schools": ["school-a", "school-b"]}]
    env = {"INTAKE_INTEGRATIONS": json.dumps(integrations), "POLICY_DIR": str(policies)}
    running = launch(env, ready_timeout=180)
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture(scope="module")
def playwright() -> Iterator[Playwright]:
    with sync_playwright() as p:
        yield p


@pytest.fixture(scope="module")
def browser(playwright: Playwright) -> Iterator[Browser]:
    browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
    try:
        yield browser
    finally:
        browser.close()
