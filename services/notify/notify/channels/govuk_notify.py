"""GOV.UK Notify (email and SMS) over its public REST API v2, as its official clients call it.

Templates are kept in Notify's admin; ours are deliberately empty shells so that the wording lives in
`notify.messages` and is tested here:
- email template: subject `((subject))`, body `((body))`
- SMS template: `((body))`
The notification id goes in `reference`, so a message can be found in Notify by our own id.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import httpx
import jwt

from common.contracts import ChannelKind
from common.events import Clock, utc_now
from notify.channels import _http
from notify.channels.base import DeliveryReceipt, OutgoingMessage, PermanentDeliveryError

DEFAULT_BASE_URL = "https://api.notifications.service.gov.uk"
_UUID = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
_API_KEY = re.compile(rf"(?P<name>.+)-(?P<service>{_UUID})-(?P<secret>{_UUID})", re.IGNORECASE)
_PATHS = {ChannelKind.EMAIL: "/v2/notifications/email", ChannelKind.SMS: "/v2/notifications/sms"}
# A notification in one of these states never reached the person: sending again is right.
_FAILED = frozenset({"permanent-failure", "temporary-failure", "technical-failure", "validation-failed"})


@dataclass(frozen=True)
class NotifyApiKey:
    """`{key_name}-{service_id}-{secret}`, both ids UUIDs. The secret signs; it is never sent."""

    key_name: str
    service_id: str
    secret: str = field(repr=False)

    @classmethod
    def parse(cls, api_key: str) -> NotifyApiKey:
        match = _API_KEY.fullmatch(api_key.strip())
        if match is None:
            raise ValueError("GOV.UK Notify API key must look like {key_name}-{service_id}-{secret} (UUIDs)")
        return cls(match["name"], match["service"], match["secret"])

    def bearer_token(self, clock: Clock) -> str:
        """A fresh JWT per request: Notify refuses one whose `iat` is over 30 seconds from its clock."""
        claims = {"iss": self.service_id, "iat": int(clock().timestamp())}
        return jwt.encode(claims, self.secret, algorithm="HS256", headers={"typ": "JWT"})


@dataclass(frozen=True)
class GovUkNotifySettings:
    api_key: NotifyApiKey
    email_template_id: str
    sms_template_id: str
    base_url: str = DEFAULT_BASE_URL
    timeout_seconds: float = 10.0
    email_reply_to_id: str | None = None
    sms_sender_id: str | None = None


class GovUkNotifyChannel:
    """One channel kind (EMAIL or SMS) through GOV.UK Notify."""

    def __init__(
        self,
        settings: GovUkNotifySettings,
        kind: ChannelKind,
        *,
        client: httpx.AsyncClient | None = None,
        clock: Clock = utc_now,
    ) -> None:
        if kind not in _PATHS:
            raise ValueError(f"GOV.UK Notify sends email or SMS, not {kind}")
        self._settings = settings
        self._kind = kind
        self._client = client
        self._clock = clock

    @property
    def kind(self) -> ChannelKind:
        return self._kind

    async def send(self, message: OutgoingMessage, address: str) -> DeliveryReceipt:
        body = self._request_body(message, address)
        url = self._settings.base_url.rstrip("/") + _PATHS[self._kind]
        headers = {
            "Authorization": f"Bearer {self._settings.api_key.bearer_token(self._clock)}",
            "Content-Type": "application/json",
            "User-Agent": "online-safety-escalation-notify",
        }
        async with _http.client_for(self._client) as client:
            if message.maybe_sent_before:
                found = await self._sent_before(client, message.message_id, headers)
                if found is not None:
                    return DeliveryReceipt(self._kind, message.message_id, found, "found sent by an earlier attempt")
            response = await _http.request(
                lambda: client.post(url, json=body, headers=headers, timeout=self._settings.timeout_seconds),
                "GOV.UK Notify",
                self._clock,
            )
        return DeliveryReceipt(self._kind, message.message_id, *_provider_id(response))

    async def _sent_before(self, client: httpx.AsyncClient, reference: str, headers: dict[str, str]) -> str | None:
        """The id of a notification an earlier attempt made with this reference, unless it failed. Notify has no
        idempotency key: an SMS accepted just before a timeout, a 5xx from a proxy in front of it, or a crash
        before the send was recorded would otherwise reach the phone twice."""
        url = self._settings.base_url.rstrip("/") + "/v2/notifications"
        params = {"reference": reference, "template_type": self._kind.value}
        response = await _http.request(
            lambda: client.get(url, params=params, headers=headers, timeout=self._settings.timeout_seconds),
            "GOV.UK Notify (looking for an earlier attempt)",
            self._clock,
        )
        try:
            found = response.json().get("notifications", [])
        except (ValueError, AttributeError):
            found = []
        for notification in found if isinstance(found, list) else []:
            if (isinstance(notification, dict) and notification.get("reference") == reference
                    and notification.get("status") not in _FAILED and isinstance(notification.get("id"), str)):
                return str(notification["id"])
        return None

    def _request_body(self, message: OutgoingMessage, address: str) -> dict[str, Any]:
        address = address.strip()
        if not address:
            raise PermanentDeliveryError("no address to send to")
        s = self._settings
        if self._kind is ChannelKind.EMAIL:
            body: dict[str, Any] = {
                "email_address": address,
                "template_id": s.email_template_id,
                "personalisation": {"subject": message.subject, "body": message.email_body},
                "reference": message.message_id,
            }
            if s.email_reply_to_id:
                body["email_reply_to_id"] = s.email_reply_to_id
        else:
            body = {
                "phone_number": address,
                "template_id": s.sms_template_id,
                "personalisation": {"body": message.sms_text},
                "reference": message.message_id,
            }
            if s.sms_sender_id:
                body["sms_sender_id"] = s.sms_sender_id
        return body


def _provider_id(response: httpx.Response) -> tuple[str, str]:
    """Notify answers 201 with the notification's `id`. Accepted but unreadable is still accepted: a
    retry would send the message twice, so report it as sent and say the id is unknown."""
    try:
        payload = response.json()
    except ValueError:
        return "", f"accepted ({response.status_code}) without a JSON body"
    if isinstance(payload, dict) and isinstance(payload.get("id"), str):
        return payload["id"], f"accepted ({response.status_code})"
    return "", f"accepted ({response.status_code}) without an id"
