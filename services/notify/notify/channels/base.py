"""The one interface every delivery channel implements, the message it sends and how it can fail."""

from __future__ import annotations

import functools
import re
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from common.contracts import ChannelKind

# Namespace for ids derived from notification ids; fixed forever, or receivers stop dropping repeats.
MESSAGE_ID_NAMESPACE = uuid.UUID("5b0f3c39-7a0e-4d0c-9a52-2f1d6c8e4b71")
_SAFE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
_MAX_REASON = 300


def message_id_for(notification_ids: Sequence[str]) -> str:
    """The stable id of the message carrying these notifications: the same set gives the same id on every
    attempt and every channel, so a receiver can drop a repeat (email Message-ID, webhook-id)."""
    ids = sorted(set(notification_ids))
    if not ids:
        raise ValueError("a message carries at least one notification")
    if len(ids) == 1:
        only = ids[0]
        return only if _SAFE_ID.fullmatch(only) else f"n-{uuid.uuid5(MESSAGE_ID_NAMESPACE, only)}"
    return f"digest-{uuid.uuid5(MESSAGE_ID_NAMESPACE, chr(10).join(ids))}"


@dataclass(frozen=True)
class OutgoingMessage:
    """One rendered message in every form a channel may need; it never holds a pupil's name or DOB.

    The email body, SMS text and webhook payload are each rendered the first time they are read (then kept):
    a message goes out on one channel, and rendering the SMS of every email was per-message work for nothing.
    """

    message_id: str
    notification_ids: tuple[str, ...]
    subject: str
    render_email_body: Callable[[], str] = field(repr=False, compare=False)
    render_sms_text: Callable[[], str] = field(repr=False, compare=False)
    render_webhook_payload: Callable[[], Mapping[str, Any]] = field(default=dict, repr=False, compare=False)
    # An earlier attempt may have reached the provider (it timed out or failed after sending, or the process
    # died before recording it): a channel that can ask the provider does so before sending again.
    maybe_sent_before: bool = False

    @functools.cached_property
    def email_body(self) -> str:
        return self.render_email_body()

    @functools.cached_property
    def sms_text(self) -> str:
        return self.render_sms_text()

    @functools.cached_property
    def webhook_payload(self) -> Mapping[str, Any]:
        return self.render_webhook_payload()

    def __post_init__(self) -> None:
        if not _SAFE_ID.fullmatch(self.message_id):
            raise ValueError("message_id must be 1-128 characters of A-Z, a-z, 0-9, '.', '_' or '-'")
        if any(c in self.subject for c in "\r\n"):
            raise ValueError("subject must be a single line")

    def email_message_id(self, domain: str) -> str:
        """RFC 5322 Message-ID: `<message-id@domain>`."""
        return f"<{self.message_id}@{domain}>"


@dataclass(frozen=True)
class DeliveryReceipt:
    """A provider accepted the message. `provider_id` is what to quote to the provider when asking."""

    channel: ChannelKind
    message_id: str
    provider_id: str
    detail: str = ""


class DeliveryError(Exception):
    """A send did not succeed. `reason` is short, carries no message content and is safe to log."""

    def __init__(self, reason: str) -> None:
        self.reason = reason[:_MAX_REASON]
        super().__init__(self.reason)


class RetryableDeliveryError(DeliveryError):
    """Try again later on this channel; `retry_after` (seconds) is the provider's own floor, if it gave one."""

    def __init__(self, reason: str, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.retry_after = retry_after


class PermanentDeliveryError(DeliveryError):
    """Retrying this channel for this address will not help: fall back to the next channel."""


class Channel(Protocol):
    @property
    def kind(self) -> ChannelKind: ...

    async def send(self, message: OutgoingMessage, address: str) -> DeliveryReceipt:
        """Deliver `message` to `address`, or raise RetryableDeliveryError / PermanentDeliveryError."""
        ...
