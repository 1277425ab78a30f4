"""Webhooks signed per Standard Webhooks (standardwebhooks.com): a receiver verifies them with any of its
libraries and drops repeats by `webhook-id`."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
from urllib.parse import urlsplit

import httpx

from common.contracts import ChannelKind
from common.events import Clock, utc_now
from notify.channels import _http
from notify.channels.base import DeliveryReceipt, OutgoingMessage, PermanentDeliveryError

SECRET_PREFIX = "whsec_"  # noqa: S105 - the format's prefix, not a secret
_LOOPBACK = frozenset({"127.0.0.1", "::1", "localhost"})


def decode_secret(secret: str) -> bytes:
    """`whsec_<base64>` (the prefix is optional, as in the reference libraries) to the raw key bytes."""
    encoded = secret.removeprefix(SECRET_PREFIX)
    try:
        key = base64.b64decode(encoded + "=" * (-len(encoded) % 4), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ValueError("webhook secret must be whsec_ followed by base64") from exc
    if len(key) < 24:
        raise ValueError("webhook secret must hold at least 24 bytes (Standard Webhooks asks 24 to 64)")
    return key


def sign(key: bytes, message_id: str, timestamp: int, body: bytes) -> str:
    """`v1,<base64 HMAC-SHA256 over "{id}.{timestamp}.{body}">`."""
    signed = f"{message_id}.{timestamp}.".encode() + body
    return "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode("ascii")


def encode_body(message: OutgoingMessage) -> bytes:
    """The exact bytes that are signed and sent."""
    return json.dumps(message.webhook_payload, separators=(",", ":"), ensure_ascii=False).encode()


class WebhookChannel:
    """POSTs the message's webhook payload to the address (a URL). Plain http is refused except to
    this machine or when the operator allows it: these payloads are safeguarding data. Redirects are not
    followed (a 3xx is permanent), so a payload never goes to a host nobody configured."""

    def __init__(
        self,
        secret: str,
        *,
        client: httpx.AsyncClient | None = None,
        clock: Clock = utc_now,
        timeout_seconds: float = 10.0,
        allow_plain_http: bool = False,
    ) -> None:
        self._key = decode_secret(secret)
        self._client = client
        self._clock = clock
        self._timeout = timeout_seconds
        self._allow_plain_http = allow_plain_http

    @property
    def kind(self) -> ChannelKind:
        return ChannelKind.WEBHOOK

    async def send(self, message: OutgoingMessage, address: str) -> DeliveryReceipt:
        url = self._checked_url(address)
        body = encode_body(message)
        timestamp = int(self._clock().timestamp())
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "online-safety-escalation-notify",
            "webhook-id": message.message_id,
            "webhook-timestamp": str(timestamp),
            "webhook-signature": sign(self._key, message.message_id, timestamp, body),
        }
        async with _http.client_for(self._client) as client:
            response = await _http.request(
                lambda: client.post(url, content=body, headers=headers, timeout=self._timeout),
                "webhook receiver",
                self._clock,
            )
        return DeliveryReceipt(
            ChannelKind.WEBHOOK, message.message_id, message.message_id, f"answered {response.status_code}"
        )

    def _checked_url(self, address: str) -> str:
        url = address.strip()
        parts = urlsplit(url)
        if not parts.hostname:
            raise PermanentDeliveryError("webhook address is not a URL")
        if parts.scheme == "https":
            return url
        if parts.scheme == "http" and (self._allow_plain_http or parts.hostname in _LOOPBACK):
            return url
        raise PermanentDeliveryError(f"webhook address must use https, not {parts.scheme or 'nothing'}")
