"""Issue 3, point 2: never take the imagery, in any field or form."""

from __future__ import annotations

import base64
import textwrap

import httpx
import pytest
from intake_support import api_key, b64, report, tiny_jpeg, tiny_png

from intake import imagery

POLICY_WORDS = ("policy forbids copying or sharing", "where the evidence is")


def assert_policy_refusal(response: httpx.Response, field: str) -> None:
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert problem["type"].endswith("/imagery-refused")
    for words in POLICY_WORDS:
        assert words in problem["detail"]
    assert problem["errors"][0]["field"] == field


async def test_base64_png_in_description_is_refused_with_the_policy_message(shared_client: httpx.AsyncClient) -> None:
    body = report(description=f"Screenshot attached: {b64(tiny_png())}")
    response = await shared_client.post("/v1/incidents", json=body, headers=api_key())
    assert_policy_refusal(response, "description")
    assert "PNG" in response.json()["detail"]


async def test_base64_jpeg_in_description_is_refused(shared_client: httpx.AsyncClient) -> None:
    response = await shared_client.post("/v1/incidents", json=report(description=b64(tiny_jpeg())),
                                        headers=api_key())
    assert_policy_refusal(response, "description")
    assert "JPEG" in response.json()["detail"]


async def test_data_uri_in_a_nested_field_is_refused(shared_client: httpx.AsyncClient) -> None:
    body = report()
    body["evidence"]["location"] = "data:image/png;base64," + b64(tiny_png())
    response = await shared_client.post("/v1/incidents", json=body, headers=api_key())
    assert_policy_refusal(response, "evidence.location")


async def test_data_uri_in_an_unknown_field_is_refused_before_validation(shared_client: httpx.AsyncClient) -> None:
    body = report(attachments=[{"file": "data:video/mp4;base64,AAAAIGZ0eXBpc29t"}])
    response = await shared_client.post("/v1/incidents", json=body, headers=api_key())
    assert_policy_refusal(response, "attachments[0].file")


async def test_mime_wrapped_base64_is_refused(shared_client: httpx.AsyncClient) -> None:
    wrapped = "\n".join(textwrap.wrap(base64.b64encode(tiny_jpeg()).decode(), 76))
    response = await shared_client.post("/v1/incidents", json=report(description="see:\n" + wrapped),
                                        headers=api_key())
    assert_policy_refusal(response, "description")


async def test_multipart_upload_is_refused(shared_client: httpx.AsyncClient) -> None:
    response = await shared_client.post(
        "/v1/incidents", data={"school_id": "school-a"}, files={"evidence": ("shot.png", tiny_png(), "image/png")},
        headers=api_key(),
    )
    assert_policy_refusal(response, "the request body")


async def test_raw_image_body_is_refused_with_the_policy_not_415(shared_client: httpx.AsyncClient) -> None:
    response = await shared_client.post("/v1/incidents", content=tiny_png(),
                                        headers={**api_key(), "Content-Type": "application/octet-stream"})
    assert_policy_refusal(response, "the request body")


async def test_imagery_is_refused_on_actions_too(shared_client: httpx.AsyncClient) -> None:
    created = await shared_client.post("/v1/incidents", json=report(), headers=api_key())
    incident = created.json()["incident_id"]
    body = {"action": "incident_closed", "outcome": "data:image/jpeg;base64," + b64(tiny_jpeg()),
            "by": {"role": "dsl"}}
    response = await shared_client.post(f"/v1/incidents/{incident}/actions", json=body, headers=api_key())
    assert_policy_refusal(response, "outcome")


@pytest.mark.parametrize("text", [
    "Personal data: lost laptop with the SIMS export on it",
    "Visited https://example.com/some/long/path/with-words_and_more/segments-in-it-for-sure",
    "Hash 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08 of the file (IT logged it)",
    "A long ordinary description " * 40,
    "ID3 of the pupils saw it",
])
def test_ordinary_text_is_not_mistaken_for_imagery(text: str) -> None:
    assert imagery.inspect_text(text) is None


@pytest.mark.parametrize(("data", "kind"), [
    (b"GIF89a" + bytes(40), "GIF"),
    (b"RIFF\x00\x00\x00\x00WEBPVP8 " + bytes(40), "WebP"),
    (b"\x00\x00\x00\x18ftypmp42" + bytes(40), "video"),
    (b"%PDF-1.7\n" + bytes(40), "PDF"),
    (b"\x1a\x45\xdf\xa3" + bytes(40), "WebM"),
])
def test_media_signatures_are_recognised_in_base64(data: bytes, kind: str) -> None:
    found = imagery.inspect_text("x " + base64.b64encode(data).decode())
    assert found is not None and kind in found


def test_long_binary_base64_without_a_known_signature_is_file_data() -> None:
    blob = base64.b64encode(bytes((i * 37 + 11) % 256 for i in range(3000))).decode()
    assert imagery.inspect_text(blob) == "file data (base64)"
