"""Signed, expiring tokens: people's bearer tokens and one-time acknowledgement links (issued by notify,
verified by intake).

The format is compact rather than JWT on purpose: an acknowledgement link must fit in an SMS of at most
three fragments beside the school's name and the first reminders, and a JWT carrying these claims is
about 400 characters. A token is ``base64url(payload || tag)`` where ``payload`` is a version byte, a
purpose byte, issue and expiry times and the claims as length-prefixed strings (UUID-shaped strings are
packed into 16 bytes), and ``tag`` is HMAC-SHA256 over the payload, truncated to 128 bits (NIST SP
800-107 allows truncation; 128 bits is far beyond guessing over HTTP). The MAC key is derived from the
configured secret, so this secret never keys anything else directly.

A token proves who it was issued for and until when; making an acknowledgement link work only once is the
verifier's job: it records ``token_id`` (the jti) in the same transaction as the acknowledgement.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import struct
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import IntEnum

from common.events import Clock, IdFactory, new_id, utc_now

_VERSION = 1
_TAG_BYTES = 16
_HEADER = struct.Struct(">BBII")  # version, purpose, issued at, expires at (epoch seconds, unsigned)
_MIN_SECRET_BYTES = 32
_KEY_LABEL = b"online-safety-escalation/tokens/v1"
_STR = 0x00
_UUID = 0x01


class Purpose(IntEnum):
    PERSON = 1
    ACK = 2


class TokenError(ValueError):
    """Base of every reason a token is refused; the message is safe to show and to log."""


class MalformedToken(TokenError):
    """Not a token of ours at all (bad encoding, truncated, unknown version)."""


class BadSignature(TokenError):
    """The token was altered, or was signed with another secret."""


class WrongPurpose(TokenError):
    def __init__(self, expected: Purpose, actual: Purpose) -> None:
        super().__init__(f"token is for {actual.name.lower()}, not {expected.name.lower()}")
        self.expected = expected
        self.actual = actual


class TokenExpired(TokenError):
    def __init__(self, expired_at: datetime) -> None:
        super().__init__(f"token expired at {expired_at.isoformat()}")
        self.expired_at = expired_at


@dataclass(frozen=True)
class PersonClaims:
    """A signed-in person: DSL, headteacher, governor... acting for one school."""

    person_id: str
    role: str
    school_id: str
    token_id: str
    issued_at: datetime
    expires_at: datetime


@dataclass(frozen=True)
class AckLinkClaims:
    """What a one-time acknowledgement link stands for; `token_id` is what makes it single-use."""

    notification_id: str
    incident_id: str
    school_id: str
    recipient_role: str
    token_id: str
    issued_at: datetime
    expires_at: datetime


def issue_person_token(
    secret: bytes | str,
    *,
    person_id: str,
    role: str,
    school_id: str,
    ttl: timedelta,
    clock: Clock = utc_now,
    ids: IdFactory = new_id,
) -> str:
    return _issue(secret, Purpose.PERSON, [person_id, role, school_id, ids()], ttl, clock)


def verify_person_token(
    token: str, secret: bytes | str, *, clock: Clock = utc_now, leeway: timedelta = timedelta(0)
) -> PersonClaims:
    fields, issued, expires = _verify(token, secret, Purpose.PERSON, clock, leeway)
    person_id, role, school_id, token_id = _expect(fields, 4)
    return PersonClaims(person_id, role, school_id, token_id, issued, expires)


def issue_ack_token(
    secret: bytes | str,
    *,
    notification_id: str,
    incident_id: str,
    school_id: str,
    recipient_role: str,
    ttl: timedelta,
    clock: Clock = utc_now,
    ids: IdFactory = new_id,
) -> str:
    claims = [notification_id, incident_id, school_id, recipient_role, ids()]
    return _issue(secret, Purpose.ACK, claims, ttl, clock)


def verify_ack_token(
    token: str, secret: bytes | str, *, clock: Clock = utc_now, leeway: timedelta = timedelta(0)
) -> AckLinkClaims:
    fields, issued, expires = _verify(token, secret, Purpose.ACK, clock, leeway)
    notification_id, incident_id, school_id, role, token_id = _expect(fields, 5)
    return AckLinkClaims(notification_id, incident_id, school_id, role, token_id, issued, expires)


def _issue(secret: bytes | str, purpose: Purpose, fields: Sequence[str], ttl: timedelta, clock: Clock) -> str:
    if ttl <= timedelta(0):
        raise ValueError("a token's time to live must be positive")
    now = clock()
    issued = int(now.timestamp())
    expires = int((now + ttl).timestamp())
    payload = _HEADER.pack(_VERSION, purpose, issued, expires) + b"".join(_pack(f) for f in fields)
    raw = payload + _tag(_mac_key(secret), payload)
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _verify(
    token: str, secret: bytes | str, expected: Purpose, clock: Clock, leeway: timedelta
) -> tuple[list[str], datetime, datetime]:
    raw = _decode(token)
    if len(raw) < _HEADER.size + _TAG_BYTES:
        raise MalformedToken("token is too short")
    payload, tag = raw[:-_TAG_BYTES], raw[-_TAG_BYTES:]
    if not hmac.compare_digest(tag, _tag(_mac_key(secret), payload)):
        raise BadSignature("token signature does not match")
    version, purpose_code, issued, expires = _HEADER.unpack_from(payload)
    if version != _VERSION:
        raise MalformedToken(f"unknown token version {version}")
    try:
        purpose = Purpose(purpose_code)
    except ValueError as exc:
        raise MalformedToken(f"unknown token purpose {purpose_code}") from exc
    if purpose is not expected:
        raise WrongPurpose(expected, purpose)
    expires_at = datetime.fromtimestamp(expires, UTC)
    if clock() >= expires_at + leeway:
        raise TokenExpired(expires_at)
    return _unpack(payload[_HEADER.size :]), datetime.fromtimestamp(issued, UTC), expires_at


def _mac_key(secret: bytes | str) -> bytes:
    key = secret.encode() if isinstance(secret, str) else secret
    if len(key) < _MIN_SECRET_BYTES:
        raise ValueError(f"token secret must be at least {_MIN_SECRET_BYTES} bytes")
    return hmac.new(key, _KEY_LABEL, hashlib.sha256).digest()


def _tag(key: bytes, payload: bytes) -> bytes:
    return hmac.new(key, payload, hashlib.sha256).digest()[:_TAG_BYTES]


def _decode(token: str) -> bytes:
    try:
        return base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    except (binascii.Error, ValueError) as exc:
        raise MalformedToken("token is not base64url") from exc


def _pack(value: str) -> bytes:
    if _is_canonical_uuid(value):
        return bytes([_UUID]) + uuid.UUID(value).bytes
    encoded = value.encode()
    if len(encoded) > 255:
        raise ValueError("a token claim may be at most 255 bytes")
    return bytes([_STR, len(encoded)]) + encoded


def _unpack(data: bytes) -> list[str]:
    fields: list[str] = []
    i = 0
    try:
        while i < len(data):
            kind = data[i]
            if kind == _UUID:
                fields.append(str(uuid.UUID(bytes=data[i + 1 : i + 17])))
                i += 17
            elif kind == _STR:
                length = data[i + 1]
                chunk = data[i + 2 : i + 2 + length]
                if len(chunk) != length:
                    raise MalformedToken("token claim is truncated")
                fields.append(chunk.decode())
                i += 2 + length
            else:
                raise MalformedToken("token claim has an unknown encoding")
    except MalformedToken:
        raise
    except (IndexError, ValueError) as exc:  # includes UnicodeDecodeError and short UUID bytes
        raise MalformedToken("token claims cannot be read") from exc
    return fields


def _expect(fields: list[str], count: int) -> list[str]:
    if len(fields) != count:
        raise MalformedToken(f"token carries {len(fields)} claims, expected {count}")
    return fields


def _is_canonical_uuid(value: str) -> bool:
    try:
        return str(uuid.UUID(value)) == value
    except ValueError:
        return False
