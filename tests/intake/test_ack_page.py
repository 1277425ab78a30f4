"""/ack/{token}: the page an acknowledgement link opens. GET never acknowledges; POST does, once."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import httpx
from intake_support import SECRET, ack_link, person, reported

from common.tokens import issue_ack_token

FORM = {"Content-Type": "application/x-www-form-urlencoded"}


async def _status(client: httpx.AsyncClient, incident: str) -> dict[str, object]:
    response = await client.get(f"/v1/incidents/{incident}", headers=person("dsl"))
    assert response.status_code == 200, response.text
    view: dict[str, object] = response.json()
    return view


async def test_get_shows_one_button_and_changes_nothing(shared_client: httpx.AsyncClient) -> None:
    incident = await reported(shared_client)
    token = ack_link(incident, role="headteacher", notification_id="n-page")
    for _ in range(2):  # a mail scanner, then the person
        page = await shared_client.get(f"/ack/{token}")
        assert page.status_code == 200, page.text
        assert page.headers["content-type"].startswith("text/html")
        assert page.headers["cache-control"] == "no-store"
        assert "school-a" in page.text
        assert page.text.count("<button") == 1
        assert f'<form method="post" action="/ack/{token}">' in page.text
    view = await _status(shared_client, incident)
    assert view["reference"] in page.text
    assert view["status"] == "received"
    assert view["acknowledgements"] == []

    # The token was not spent by the GETs: the POST works and the role comes from the link.
    done = await shared_client.post(f"/ack/{token}", content=b"", headers=FORM)
    assert done.status_code == 200, done.text
    assert "acknowledged" in done.text and "headteacher" in done.text
    view = await _status(shared_client, incident)
    assert view["status"] == "acknowledged"
    acks = view["acknowledgements"]
    assert isinstance(acks, list) and len(acks) == 1
    assert acks[0]["role"] == "headteacher" and acks[0]["via"] == "link"

    again = await shared_client.post(f"/ack/{token}", content=b"", headers=FORM)
    assert again.status_code == 410
    assert "already been used" in again.text
    assert (await shared_client.get(f"/ack/{token}")).status_code == 410
    # Nor can the API spend it again: it is the same one-time record.
    api = await shared_client.post(f"/v1/incidents/{incident}/acknowledgements",
                                   headers={"Authorization": f"Bearer {token}"})
    assert api.status_code == 409
    assert len((await _status(shared_client, incident))["acknowledgements"]) == 1  # type: ignore[arg-type]


async def test_a_link_spent_through_the_api_is_refused_by_the_page(shared_client: httpx.AsyncClient) -> None:
    incident = await reported(shared_client)
    token = ack_link(incident)
    api = await shared_client.post(f"/v1/incidents/{incident}/acknowledgements",
                                   headers={"Authorization": f"Bearer {token}"})
    assert api.status_code == 201
    assert (await shared_client.post(f"/ack/{token}", content=b"", headers=FORM)).status_code == 410


async def test_expired_and_bad_links_get_an_error_page(shared_client: httpx.AsyncClient) -> None:
    incident = await reported(shared_client)
    expired = issue_ack_token(SECRET, notification_id="n-old", incident_id=incident, school_id="school-a",
                              recipient_role="dsl", ttl=timedelta(hours=1),
                              clock=lambda: datetime.now(UTC) - timedelta(hours=2))
    for method in ("GET", "POST"):
        response = await shared_client.request(method, f"/ack/{expired}")
        assert response.status_code == 410
        assert "expired" in response.text
        tampered = ack_link(incident)[:-3] + "AAA"
        response = await shared_client.request(method, f"/ack/{tampered}")
        assert response.status_code == 400
        assert "not valid" in response.text
        person_token = person()["Authorization"].removeprefix("Bearer ")
        assert (await shared_client.request(method, f"/ack/{person_token}")).status_code == 400
    view = await _status(shared_client, incident)
    assert view["status"] == "received" and view["acknowledgements"] == []


async def test_the_page_escapes_what_it_shows(shared_client: httpx.AsyncClient) -> None:
    incident = await reported(shared_client)
    token = ack_link(incident, role='<script>alert("x")</script>')
    page = await shared_client.get(f"/ack/{token}")
    assert page.status_code == 200
    assert "<script>" not in page.text
    assert "&lt;script&gt;" in page.text
