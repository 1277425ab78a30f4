"""GOV.UK Notify email and SMS against a local HTTP server speaking its API (notify.channels.govuk_notify)."""

from __future__ import annotations

import dataclasses
import datetime as dt
import socket
import urllib.parse

import httpx
import jwt
import pytest

from common.contracts import ChannelKind
from notify.channels.base import OutgoingMessage, PermanentDeliveryError, RetryableDeliveryError
from notify.channels.govuk_notify import GovUkNotifyChannel, GovUkNotifySettings, NotifyApiKey
from notify.messages import Links, render

SERVICE_ID = "26785a09-ab16-4eb0-8407-a37497a57506"
SECRET = "3d844edf-8d35-48ac-975b-e847b4f122b0"
API_KEY = f"oakfield_live-{SERVICE_ID}-{SECRET}"
EMAIL_TEMPLATE = "f33517ff-2a88-4f6e-b855-c550268ce08a"
SMS_TEMPLATE = "ceb50d92-100d-4b8b-b559-14fa3b091cda"
NOW = dt.datetime(2025, 3, 4, 9, 30, tzinfo=dt.UTC)
LINKS = Links(acknowledge="https://safety.example/ack/TOKEN123")


def notify(base_url: str, kind: ChannelKind, timeout: float = 2, **kw: object) -> GovUkNotifyChannel:
    settings = GovUkNotifySettings(
        api_key=NotifyApiKey.parse(API_KEY),
        email_template_id=EMAIL_TEMPLATE,
        sms_template_id=SMS_TEMPLATE,
        base_url=base_url,
        timeout_seconds=timeout,
    )
    return GovUkNotifyChannel(settings, kind, clock=lambda: NOW, **kw)  # type: ignore[arg-type]


def bearer_claims(request) -> dict:
    scheme, token = request.headers["authorization"].split(" ", 1)
    assert scheme == "Bearer"
    assert jwt.get_unverified_header(token) == {"alg": "HS256", "typ": "JWT"}
    # Signed with the key's secret part, as Notify checks it; iat is checked against our clock.
    return jwt.decode(token, SECRET, algorithms=["HS256"], options={"verify_iat": False})


async def test_email_goes_to_v2_notifications_email_with_a_fresh_jwt_and_our_reference(http_server, make_request):
    message = render(make_request(), LINKS)
    receipt = await notify(http_server.url, ChannelKind.EMAIL).send(message, "dsl@oakfield.example")

    [request] = http_server.requests
    assert request.path == "/v2/notifications/email"
    assert request.headers["content-type"] == "application/json"
    assert bearer_claims(request) == {"iss": SERVICE_ID, "iat": int(NOW.timestamp())}
    assert request.json() == {
        "email_address": "dsl@oakfield.example",
        "template_id": EMAIL_TEMPLATE,
        "personalisation": {"subject": message.subject, "body": message.email_body},
        "reference": "6f1c2a7e-3b9d-4c55-9e0a-1d2b3c4d5e6f",
    }
    assert receipt.provider_id == "740e5834-3a29-46b4-9a6f-16142fde533a"
    assert receipt.channel is ChannelKind.EMAIL and receipt.message_id == message.message_id


async def test_sms_goes_to_v2_notifications_sms(http_server, make_request):
    http_server.then(201, {"id": "bfb50d92-100d-4b8b-b559-14fa3b091cda", "reference": "x", "content": {}})
    message = render(make_request(), LINKS)
    receipt = await notify(http_server.url, ChannelKind.SMS).send(message, "07700 900123")

    [request] = http_server.requests
    assert request.path == "/v2/notifications/sms"
    assert bearer_claims(request)["iss"] == SERVICE_ID
    assert request.json() == {
        "phone_number": "07700 900123",
        "template_id": SMS_TEMPLATE,
        "personalisation": {"body": message.sms_text},
        "reference": "6f1c2a7e-3b9d-4c55-9e0a-1d2b3c4d5e6f",
    }
    assert receipt.provider_id == "bfb50d92-100d-4b8b-b559-14fa3b091cda"


async def test_each_request_carries_its_own_token_issued_now(http_server, make_request):
    times = iter([NOW, NOW + dt.timedelta(seconds=40)])
    settings = GovUkNotifySettings(NotifyApiKey.parse(API_KEY), EMAIL_TEMPLATE, SMS_TEMPLATE, base_url=http_server.url)
    channel = GovUkNotifyChannel(settings, ChannelKind.EMAIL, clock=lambda: next(times))
    message = render(make_request(), LINKS)
    await channel.send(message, "dsl@oakfield.example")
    await channel.send(message, "dsl@oakfield.example")
    assert [bearer_claims(r)["iat"] for r in http_server.requests] == [int(NOW.timestamp()), int(NOW.timestamp()) + 40]


async def test_a_server_error_is_retryable_and_the_retry_succeeds(http_server, make_request):
    http_server.then(500, {"status_code": 500, "errors": [{"error": "Exception", "message": "Internal server error"}]})
    channel = notify(http_server.url, ChannelKind.EMAIL)
    message = render(make_request(), LINKS)
    with pytest.raises(RetryableDeliveryError, match="500") as caught:
        await channel.send(message, "dsl@oakfield.example")
    assert caught.value.retry_after is None
    assert (await channel.send(message, "dsl@oakfield.example")).provider_id


async def test_rate_limiting_is_retryable_and_surfaces_retry_after_seconds(http_server, make_request):
    errors = [{"error": "RateLimitError", "message": "Exceeded rate limit for key type LIVE of 3000 requests per 60 s"}]
    http_server.then(429, {"status_code": 429, "errors": errors}, headers={"Retry-After": "17"})
    with pytest.raises(RetryableDeliveryError, match="RateLimitError") as caught:
        await notify(http_server.url, ChannelKind.SMS).send(render(make_request(), LINKS), "07700900123")
    assert caught.value.retry_after == 17.0


async def test_retry_after_as_an_http_date_is_seconds_from_our_clock(http_server, make_request):
    http_server.then(429, None, headers={"Retry-After": "Tue, 04 Mar 2025 09:31:30 GMT"})
    with pytest.raises(RetryableDeliveryError) as caught:
        await notify(http_server.url, ChannelKind.SMS).send(render(make_request(), LINKS), "07700900123")
    assert caught.value.retry_after == 90.0


@pytest.mark.parametrize(
    ("status", "error"),
    [(400, "BadRequestError"), (400, "ValidationError"), (403, "AuthError")],
)
async def test_other_client_errors_are_permanent(http_server, make_request, status, error):
    http_server.then(status, {"status_code": status, "errors": [{"error": error, "message": "phone_number Not valid"}]})
    with pytest.raises(PermanentDeliveryError, match=f"{status}: {error}"):
        await notify(http_server.url, ChannelKind.SMS).send(render(make_request(), LINKS), "0")


async def test_a_slow_provider_times_out_as_retryable(http_server, make_request):
    http_server.then(201, {"id": "late"}, delay=1)
    with pytest.raises(RetryableDeliveryError, match="timed out"):
        await notify(http_server.url, ChannelKind.EMAIL, timeout=0.2).send(
            render(make_request(), LINKS), "dsl@oakfield.example"
        )


async def test_an_unreachable_provider_is_retryable(make_request):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(RetryableDeliveryError, match="unreachable"):
        await notify(f"http://127.0.0.1:{port}", ChannelKind.EMAIL).send(render(make_request(), LINKS), "a@b.example")


async def test_a_shared_client_is_used_when_given(http_server, make_request):
    async with httpx.AsyncClient() as client:
        channel = notify(http_server.url, ChannelKind.EMAIL, client=client)
        await channel.send(render(make_request(), LINKS), "dsl@oakfield.example")
    assert len(http_server.requests) == 1


async def test_accepted_without_an_id_is_still_delivered_not_retried(http_server, make_request):
    http_server.then(201, None)
    receipt = await notify(http_server.url, ChannelKind.EMAIL).send(render(make_request(), LINKS), "a@b.example")
    assert receipt.provider_id == "" and "without" in receipt.detail


def test_api_key_is_split_like_the_official_client_and_its_secret_is_not_shown():
    key = NotifyApiKey.parse(API_KEY)
    assert (key.key_name, key.service_id, key.secret) == ("oakfield_live", SERVICE_ID, SECRET)
    assert SECRET not in repr(key)
    # The official client takes api_key[-73:-37] and api_key[-36:]; so do we, whatever the name holds.
    assert NotifyApiKey.parse(f"my-key-with-dashes-{SERVICE_ID}-{SECRET}").key_name == "my-key-with-dashes"


@pytest.mark.parametrize("bad", ["", SECRET, f"{SERVICE_ID}-{SECRET}", f"name-{SERVICE_ID}-not-a-uuid"])
def test_malformed_api_keys_are_refused_at_start(bad):
    with pytest.raises(ValueError, match="key_name"):
        NotifyApiKey.parse(bad)


def test_notify_does_not_deliver_webhooks():
    settings = GovUkNotifySettings(NotifyApiKey.parse(API_KEY), EMAIL_TEMPLATE, SMS_TEMPLATE)
    with pytest.raises(ValueError):
        GovUkNotifyChannel(settings, ChannelKind.WEBHOOK)


def _again(message: OutgoingMessage) -> OutgoingMessage:
    """The message as the delivery loop sends it when an earlier attempt may have reached Notify."""
    return dataclasses.replace(message, maybe_sent_before=True)


async def test_a_message_an_earlier_attempt_may_have_sent_is_looked_for_and_not_sent_twice(
    http_server, make_request
):
    """Notify has no idempotency key: an SMS it accepted just before our timeout would reach the phone twice.
    Before sending again, the channel asks Notify for a notification with our reference."""
    message = render(make_request(), LINKS)
    http_server.then(200, {"notifications": [
        {"id": "11111111-2222-4333-8444-555555555555", "reference": message.message_id, "status": "delivered"}],
        "links": {}})
    receipt = await notify(http_server.url, ChannelKind.SMS).send(_again(message), "07700 900123")

    [request] = http_server.requests
    assert request.method == "GET"
    path, _, query = request.path.partition("?")
    assert path == "/v2/notifications"
    assert urllib.parse.parse_qs(query) == {"reference": [message.message_id], "template_type": ["sms"]}
    assert bearer_claims(request)["iss"] == SERVICE_ID
    assert receipt.provider_id == "11111111-2222-4333-8444-555555555555"
    assert receipt.detail == "found sent by an earlier attempt"


_FAILED_EARLIER = {"id": "11111111-2222-4333-8444-555555555555", "status": "technical-failure"}


@pytest.mark.parametrize("earlier", [[], [_FAILED_EARLIER]], ids=["none", "one that failed"])
async def test_a_message_not_found_sent_before_is_sent(http_server, make_request, earlier):
    message = render(make_request(), LINKS)
    http_server.then(200, {"notifications": [{**n, "reference": message.message_id} for n in earlier], "links": {}})
    receipt = await notify(http_server.url, ChannelKind.SMS).send(_again(message), "07700 900123")
    assert [(r.method, r.path.partition("?")[0]) for r in http_server.requests] == [
        ("GET", "/v2/notifications"), ("POST", "/v2/notifications/sms")]
    assert receipt.provider_id == "740e5834-3a29-46b4-9a6f-16142fde533a"


async def test_when_notify_cannot_be_asked_nothing_is_sent_and_the_send_is_retried(http_server, make_request):
    http_server.then(503, {"errors": [{"error": "ServiceUnavailable", "message": "down"}]})
    message = render(make_request(), LINKS)
    with pytest.raises(RetryableDeliveryError, match="503"):
        await notify(http_server.url, ChannelKind.SMS).send(_again(message), "07700 900123")
    assert [r.method for r in http_server.requests] == ["GET"]
