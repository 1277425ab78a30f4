"""Issue 3, point 2: never take the imagery, in any field or form."""

from __future__ import annotations

import base64
import hashlib
import json
import textwrap
import time
import urllib.parse
from collections.abc import Callable

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


@pytest.mark.parametrize(("content_type", "body"), [
    ("text/plain", "Screenshot: data:image/png;base64," + b64(tiny_png())),
    ("application/x-www-form-urlencoded", "description=see+attached&photo=" + b64(tiny_jpeg())),
])
async def test_imagery_in_a_text_or_form_body_is_refused_with_the_policy_not_415(
    shared_client: httpx.AsyncClient, content_type: str, body: str
) -> None:
    response = await shared_client.post("/v1/incidents", content=body.encode(),
                                        headers={**api_key(), "Content-Type": content_type})
    assert_policy_refusal(response, "the request body")


async def test_a_text_body_without_imagery_is_still_the_wrong_type(shared_client: httpx.AsyncClient) -> None:
    response = await shared_client.post("/v1/incidents", content=b"description=a pupil saw a video",
                                        headers={**api_key(), "Content-Type": "text/plain"})
    assert response.status_code == 415, response.text


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
    "Data: the pupil's login was shared, see the note",
    "The file's SHA-512: " + hashlib.sha512(b"").hexdigest(),
    "Reference CEOP-2026-000123, crime number 44/123456/26; LADO ref LADO/26/0042",
    "She drew <b>nothing</b> on the <svg-free> whiteboard app",
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


@pytest.mark.parametrize("encode", [
    pytest.param(lambda blob: "img-" + b64(blob), id="glued to a word"),
    pytest.param(lambda blob: "screenshot-attached-" + b64(blob), id="glued to a longer word"),
    pytest.param(lambda blob: "x" + b64(blob), id="one character before it"),
    pytest.param(lambda blob: " ".join(textwrap.wrap(b64(blob), 30)), id="cut into pieces by spaces"),
    pytest.param(lambda blob: "see\n" + "\n".join(textwrap.wrap(b64(blob), 12)), id="cut into short lines"),
    pytest.param(lambda blob: base64.urlsafe_b64encode(blob).decode(), id="base64url"),
    pytest.param(lambda blob: blob.hex(), id="hex"),
])
@pytest.mark.parametrize("blob", [tiny_png(), tiny_jpeg()], ids=["png", "jpeg"])
def test_imagery_is_found_however_its_base64_is_placed(blob: bytes, encode: Callable[[bytes], str]) -> None:
    assert imagery.inspect_text(encode(blob)) is not None


@pytest.mark.parametrize("text", [
    "data:," + urllib.parse.quote(tiny_png()),
    "data:;base64," + b64(tiny_png()),
    '<svg xmlns="http://www.w3.org/2000/svg" width="10"><rect/></svg>',
])
def test_data_uris_without_a_media_type_and_svg_markup_are_imagery(text: str) -> None:
    assert imagery.inspect_text(text) is not None


@pytest.mark.parametrize("text", [
    pytest.param("QUFB" * 16_000, id="base64 of text, no line break"),
    pytest.param(("QUFB" * 20 + "\n") * 780, id="base64 lines of text"),
    pytest.param("ab " * 21_000, id="short words"),
    pytest.param("UklGRgAAAAAA" * 5_300, id="a file's encoded start, over and over"),
])
def test_a_64_kib_string_is_checked_in_linear_time(text: str) -> None:
    """The guard checks every string before the caller is authenticated. Its MIME-lines pattern backtracked
    quadratically over a base64 run without a line break: 8,000 characters took 1.4 s, 64 KiB about a minute."""
    started = time.perf_counter()
    imagery.inspect_text(text)
    assert time.perf_counter() - started < 1.0


async def test_an_unauthenticated_body_built_to_be_slow_is_answered_at_once(
    shared_client: httpx.AsyncClient,
) -> None:
    body = json.dumps({"description": "QUFB" * 15_000}).encode()
    started = time.perf_counter()
    response = await shared_client.post(
        "/v1/incidents", content=body, headers={"content-type": "application/json"}, timeout=30.0
    )
    assert response.status_code == 401, response.text
    assert time.perf_counter() - started < 5.0
