"""Signed tokens: people's bearer tokens and one-time acknowledgement links (common.tokens)."""

from __future__ import annotations

import base64
import datetime as dt
import itertools

import pytest

from common.tokens import (
    AckLinkClaims,
    BadSignature,
    MalformedToken,
    Purpose,
    TokenError,
    TokenExpired,
    WrongPurpose,
    issue_ack_token,
    issue_person_token,
    verify_ack_token,
    verify_person_token,
)

SECRET = b"k" * 32
OTHER_SECRET = b"x" * 32
T0 = dt.datetime(2025, 3, 4, 9, 30, tzinfo=dt.UTC)
NOTIFICATION = "6f1c2a7e-3b9d-4c55-9e0a-1d2b3c4d5e6f"
INCIDENT = "0b7e8f90-1a2b-4c3d-8e9f-a0b1c2d3e4f5"


def at(moment: dt.datetime):
    return lambda: moment


def ids():
    counter = itertools.count(1)
    return lambda: f"00000000-0000-4000-8000-{next(counter):012d}"


def ack(ttl: dt.timedelta = dt.timedelta(days=2), **kw: object) -> str:
    fields = {
        "notification_id": NOTIFICATION,
        "incident_id": INCIDENT,
        "school_id": "school-a",
        "recipient_role": "dsl",
    }
    fields.update(kw)
    return issue_ack_token(SECRET, ttl=ttl, clock=at(T0), ids=ids(), **fields)  # type: ignore[arg-type]


def person(ttl: dt.timedelta = dt.timedelta(hours=8)) -> str:
    return issue_person_token(
        SECRET, person_id="staff-17", role="headteacher", school_id="school-a", ttl=ttl, clock=at(T0), ids=ids()
    )


def test_ack_token_round_trips_every_claim():
    claims = verify_ack_token(ack(), SECRET, clock=at(T0 + dt.timedelta(hours=1)))
    assert claims == AckLinkClaims(
        notification_id=NOTIFICATION,
        incident_id=INCIDENT,
        school_id="school-a",
        recipient_role="dsl",
        token_id="00000000-0000-4000-8000-000000000001",
        issued_at=T0,
        expires_at=T0 + dt.timedelta(days=2),
    )


def test_each_ack_token_has_its_own_token_id_so_the_verifier_can_make_it_single_use():
    a = issue_ack_token(
        SECRET, notification_id=NOTIFICATION, incident_id=INCIDENT, school_id="s", recipient_role="dsl",
        ttl=dt.timedelta(days=1), clock=at(T0),
    )  # fmt: skip
    b = issue_ack_token(
        SECRET, notification_id=NOTIFICATION, incident_id=INCIDENT, school_id="s", recipient_role="dsl",
        ttl=dt.timedelta(days=1), clock=at(T0),
    )  # fmt: skip
    assert a != b
    assert verify_ack_token(a, SECRET, clock=at(T0)).token_id != verify_ack_token(b, SECRET, clock=at(T0)).token_id


def test_ack_token_is_short_enough_for_an_sms_link_and_url_safe():
    token = ack()
    assert len(token) <= 140
    assert set(token) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")


def test_person_token_round_trips():
    claims = verify_person_token(person(), SECRET, clock=at(T0 + dt.timedelta(hours=7)))
    assert (claims.person_id, claims.role, claims.school_id) == ("staff-17", "headteacher", "school-a")
    assert claims.expires_at == T0 + dt.timedelta(hours=8)


def test_claims_that_are_not_uuids_round_trip_exactly():
    token = ack(school_id="URN 123456 – Ysgol Gymraeg", incident_id="6F1C2A7E-3B9D-4C55-9E0A-1D2B3C4D5E6F")
    claims = verify_ack_token(token, SECRET, clock=at(T0))
    assert claims.school_id == "URN 123456 – Ysgol Gymraeg"
    assert claims.incident_id == "6F1C2A7E-3B9D-4C55-9E0A-1D2B3C4D5E6F"  # not canonicalised


def test_token_is_refused_from_the_second_it_expires():
    token = ack(ttl=dt.timedelta(hours=1))
    verify_ack_token(token, SECRET, clock=at(T0 + dt.timedelta(minutes=59, seconds=59)))
    with pytest.raises(TokenExpired) as caught:
        verify_ack_token(token, SECRET, clock=at(T0 + dt.timedelta(hours=1)))
    assert caught.value.expired_at == T0 + dt.timedelta(hours=1)


def test_leeway_allows_a_little_clock_skew():
    token = person(ttl=dt.timedelta(minutes=5))
    late = at(T0 + dt.timedelta(minutes=5, seconds=10))
    with pytest.raises(TokenExpired):
        verify_person_token(token, SECRET, clock=late)
    assert verify_person_token(token, SECRET, clock=late, leeway=dt.timedelta(seconds=30)).person_id == "staff-17"


@pytest.mark.parametrize("position", [0, 5, 20, 60, -3, -1])
def test_any_altered_byte_is_refused(position: int):
    token = ack()
    raw = bytearray(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
    raw[position] ^= 0x01
    tampered = base64.urlsafe_b64encode(bytes(raw)).rstrip(b"=").decode()
    with pytest.raises(BadSignature):
        verify_ack_token(tampered, SECRET, clock=at(T0))


def test_a_token_signed_with_another_secret_is_refused():
    with pytest.raises(BadSignature):
        verify_ack_token(ack(), OTHER_SECRET, clock=at(T0))


def test_a_person_token_is_not_an_acknowledgement_link_nor_the_reverse():
    with pytest.raises(WrongPurpose) as caught:
        verify_ack_token(person(), SECRET, clock=at(T0))
    assert (caught.value.expected, caught.value.actual) == (Purpose.ACK, Purpose.PERSON)
    with pytest.raises(WrongPurpose):
        verify_person_token(ack(), SECRET, clock=at(T0))


@pytest.mark.parametrize("garbage", ["", "abc", "not base64 at all!", "eyJhbGciOiJIUzI1NiJ9.e30.x"])
def test_garbage_is_refused_as_a_token_error(garbage: str):
    with pytest.raises(TokenError):
        verify_ack_token(garbage, SECRET, clock=at(T0))


def test_truncated_token_is_malformed():
    with pytest.raises(MalformedToken):
        verify_ack_token(ack()[:20], SECRET, clock=at(T0))


def test_short_secrets_and_non_positive_lifetimes_are_refused():
    with pytest.raises(ValueError, match="at least 32 bytes"):
        verify_ack_token(ack(), b"short", clock=at(T0))
    with pytest.raises(ValueError, match="positive"):
        ack(ttl=dt.timedelta(0))


def test_str_secret_is_the_same_key_as_its_utf8_bytes():
    token = issue_person_token(
        "k" * 32, person_id="p", role="dsl", school_id="s", ttl=dt.timedelta(hours=1), clock=at(T0)
    )
    assert verify_person_token(token, SECRET, clock=at(T0)).person_id == "p"
