"""Issue 3, point 7: schemathesis against the app's own OpenAPI schema finds no 5xx.

The app runs under uvicorn in a thread of its own (its own event loop, its real database and broker);
schemathesis calls it over HTTP with a valid key or token, so generated requests reach the handlers.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import schemathesis
import uvicorn
from hypothesis import HealthCheck, given, settings
from intake_support import api_key, person, settings_for

from intake.main import create_app


def _free_port() -> int:
    import socket  # noqa: PLC0415

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def served(stack: Any) -> Iterator[str]:
    port = _free_port()
    app = create_app(settings_for(stack, "f" + uuid.uuid4().hex[:10]))
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, lifespan="on"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not server.started:
        time.sleep(0.1)
    assert server.started, "intake did not start"
    try:
        yield base
    finally:
        server.should_exit = True
        thread.join(timeout=30)


def _call(case: schemathesis.Case, base: str) -> None:
    if isinstance(case.body, dict) and "school_id" in case.body:
        case.body["school_id"] = "school-a"  # let valid reports through to the database
    is_report = case.path == "/v1/incidents" and case.method.upper() == "POST"
    response = case.call(base_url=base, headers=api_key() if is_report else person("dsl"))
    assert response.status_code < 500, f"{case.method} {case.path} -> {response.status_code}: {response.text[:500]}"
    if response.status_code >= 400 and case.path.startswith("/v1/"):
        content_type = response.headers.get("content-type", [""])[0]  # schemathesis keeps header lists
        assert content_type == "application/problem+json", response.text[:200]


def test_no_request_from_the_schema_gets_a_server_error(served: str) -> None:
    api = schemathesis.openapi.from_url(f"{served}/openapi.json")
    operations = [result.ok() for result in api.get_all_operations()]
    assert {op.path for op in operations} >= {"/v1/incidents", "/v1/incidents/{incident_id}/actions"}
    # Negative data only where there is something to get wrong; /readyz probes the broker with its own
    # timeouts (slow, and not ours to fuzz).
    runs = [(op, mode) for op in operations for mode in schemathesis.GenerationMode
            if op.path.startswith("/v1/") or (mode is schemathesis.GenerationMode.POSITIVE and op.path != "/readyz")]
    for operation, mode in runs:

        @given(case=operation.as_strategy(generation_mode=mode))
        @settings(max_examples=50 if operation.path.startswith("/v1/") else 5, deadline=None,
                  suppress_health_check=list(HealthCheck), database=None)
        def fuzz(case: schemathesis.Case) -> None:
            _call(case, served)

        fuzz()


def test_a_fuzzed_app_still_accepts_a_plain_report(served: str) -> None:
    from intake_support import report  # noqa: PLC0415

    response = httpx.post(f"{served}/v1/incidents", json=report(), headers=api_key(), timeout=10)
    assert response.status_code == 202
