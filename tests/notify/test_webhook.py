"""Standard Webhooks delivery against a local HTTP server, verified by the reference library."""

from __future__ import annotations

import base64
import datetime as dt
import json

import pytest
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

from common.contracts import ChannelKind
from notify.channels.base import PermanentDeliveryError, RetryableDeliveryError
from notify.channels.webhook import WebhookChannel, decode_secret, sign
from notify.messages import Links, render

SECRET = "whsec_" + base64.b64encode(b"oakfield-webhook-signing-key-32b").decode()
LINKS = Links(acknowledge="https://safety.example/ack/TOKEN123")


def webhook(**kw: object) -> WebhookChannel:
    return WebhookChannel(SECRET, timeout_seconds=2, **kw)  # type: ignore[arg-type]


async def test_webhook_is_signed_so_the_standard_webhooks_library_verifies_it(http_server, make_request):
    # Real clock: the library also refuses a timestamp more than five minutes from its own.
    http_server.then(204)
    message = render(make_request(), LINKS)
    receipt = await webhook().send(message, http_server.url + "/hooks/safeguarding")

    [request] = http_server.requests
    assert request.path == "/hooks/safeguarding"
    assert request.headers["content-type"] == "application/json"
    assert request.headers["webhook-id"] == "6f1c2a7e-3b9d-4c55-9e0a-1d2b3c4d5e6f"
    payload = Webhook(SECRET).verify(request.body, request.headers)
    assert payload == json.loads(json.dumps(message.webhook_payload))
    assert payload["notifications"][0]["reference"] == "OSI-7K2QF"
    assert receipt.channel is ChannelKind.WEBHOOK and receipt.provider_id == message.message_id


async def test_a_changed_body_no_longer_verifies(http_server, make_request):
    await webhook().send(render(make_request(), LINKS), http_server.url)
    [request] = http_server.requests
    with pytest.raises(WebhookVerificationError):
        Webhook(SECRET).verify(request.body.replace(b"OSI-7K2QF", b"OSI-XXXXX"), request.headers)


async def test_the_webhook_id_is_the_same_on_every_attempt(http_server, make_request):
    http_server.then(503)
    message = render(make_request(), LINKS)
    with pytest.raises(RetryableDeliveryError, match="503"):
        await webhook().send(message, http_server.url)
    await webhook().send(message, http_server.url)
    first, second = http_server.requests
    assert first.headers["webhook-id"] == second.headers["webhook-id"] == message.message_id
    Webhook(SECRET).verify(second.body, second.headers)


async def test_too_many_requests_surfaces_retry_after(http_server, make_request):
    http_server.then(429, headers={"Retry-After": "30"})
    with pytest.raises(RetryableDeliveryError) as caught:
        await webhook().send(render(make_request(), LINKS), http_server.url)
    assert caught.value.retry_after == 30.0


@pytest.mark.parametrize("status", [400, 401, 404, 410, 302])
async def test_client_errors_and_redirects_are_permanent(http_server, make_request, status):
    http_server.then(status, headers={"Location": "https://elsewhere.example/"})
    with pytest.raises(PermanentDeliveryError, match=str(status)):
        await webhook().send(render(make_request(), LINKS), http_server.url)
    assert len(http_server.requests) == 1


@pytest.mark.parametrize("url", ["http://receiver.example/hook", "ftp://receiver.example/", "not a url"])
async def test_a_remote_receiver_must_use_https(http_server, make_request, url):
    with pytest.raises(PermanentDeliveryError):
        await webhook().send(render(make_request(), LINKS), url)


def test_signature_matches_the_reference_implementation():
    key = decode_secret(SECRET)
    ours = sign(key, "msg_2KWPBgLlAfxdpx2AI54pPJ85f4W", 1674087231, b'{"test": 2432232314}')
    assert ours == Webhook(SECRET).sign("msg_2KWPBgLlAfxdpx2AI54pPJ85f4W", _at(1674087231), '{"test": 2432232314}')


def test_the_whsec_prefix_is_optional_but_the_key_must_be_base64_and_long_enough():
    assert decode_secret(SECRET.removeprefix("whsec_")) == decode_secret(SECRET)
    with pytest.raises(ValueError):
        decode_secret("whsec_not*base64")
    with pytest.raises(ValueError, match="24 bytes"):
        decode_secret("whsec_" + base64.b64encode(b"short").decode())


def _at(seconds: int) -> dt.datetime:
    return dt.datetime.fromtimestamp(seconds, dt.UTC)
