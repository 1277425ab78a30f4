"""CSRF tokens, cookie attributes, sign-in links and sessions: unit tests, and the session store against a real
PostgreSQL with the web schema's least-privilege role."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from common.db import load_migrations, prepare_database
from web.config import WebSettings
from web.members import Member
from web.security import CookiePolicy, csrf_ok, csrf_token, digest
from web.sessions import end_session, find_session, issue_signin_link, link_is_usable, redeem_signin_link

KEY = "k" * 64
T0 = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)
DSL = Member("dsl@school-a.example", "A. Patel", "school-a", "Alder Primary School", "dsl")


def test_a_csrf_token_is_accepted_only_for_the_session_it_was_made_for() -> None:
    token = csrf_token(KEY, "session-1")
    assert csrf_ok(KEY, "session-1", token)
    assert not csrf_ok(KEY, "session-2", token)
    assert not csrf_ok("other" * 13, "session-1", token)
    assert not csrf_ok(KEY, "session-1", token[:-1] + ("0" if token[-1] != "0" else "1"))
    assert not csrf_ok(KEY, "session-1", None)
    assert not csrf_ok(KEY, None, token)
    assert not csrf_ok(KEY, "", csrf_token(KEY, ""))


@pytest.mark.parametrize(("base_url", "secure"), [
    ("http://127.0.0.1:8005", False), ("http://localhost:8005", False), ("https://127.0.0.1", True),
    ("https://desk.school.example", True), ("http://desk.school.example", True),
])
def test_cookies_are_secure_everywhere_but_plain_http_on_this_machine(base_url: str, secure: bool) -> None:
    assert WebSettings(public_base_url=base_url).secure_cookies is secure
    policy = CookiePolicy(secure)
    assert policy.name("session") == ("__Host-session" if secure else "session")


def test_a_session_cookie_is_httponly_samesite_lax_and_secure_when_asked() -> None:
    from starlette.responses import Response

    response = Response()
    CookiePolicy(True).set(response, "session", "abc", 3600)
    header = response.headers["set-cookie"]
    for attribute in ("__Host-session=abc", "HttpOnly", "SameSite=lax", "Secure", "Path=/", "Max-Age=3600"):
        assert attribute in header


@pytest.fixture
async def pool(stack, isolation):
    pool = await prepare_database(stack.admin_dsn, f"web_{isolation}", load_migrations("web.migrations"),
                                  configured_password=None)
    yield pool
    await pool.close()


async def test_a_signin_link_works_once_and_only_before_it_expires(pool) -> None:
    async with pool.acquire() as conn:
        token = await issue_signin_link(conn, DSL, T0, timedelta(minutes=15))
        assert await conn.fetchval("SELECT count(*) FROM signin_links WHERE token_sha256 = $1", digest(token)) == 1
        assert await conn.fetchval("SELECT count(*) FROM signin_links WHERE token_sha256 = $1", token) == 0
        assert await link_is_usable(conn, token, T0)
        assert await link_is_usable(conn, token, T0 + timedelta(minutes=10))  # looking spends nothing
        session = await redeem_signin_link(conn, token, T0 + timedelta(minutes=1), timedelta(hours=8), lambda e: "A")
        assert session is not None and (session.school_id, session.role, session.name) == ("school-a", "dsl", "A")
        assert await redeem_signin_link(conn, token, T0 + timedelta(minutes=2), timedelta(hours=8), lambda e: "A") \
            is None
        late = await issue_signin_link(conn, DSL, T0, timedelta(minutes=15))
        assert not await link_is_usable(conn, late, T0 + timedelta(minutes=15))
        assert await redeem_signin_link(conn, late, T0 + timedelta(minutes=15), timedelta(hours=8),
                                        lambda e: "A") is None


async def test_a_session_expires_and_signing_out_ends_it(pool) -> None:
    async with pool.acquire() as conn:
        token = await issue_signin_link(conn, DSL, T0, timedelta(minutes=15))
        session = await redeem_signin_link(conn, token, T0, timedelta(hours=8), lambda e: None)
        assert session is not None and session.name == "dsl"
        assert await find_session(conn, session.session_id, T0 + timedelta(hours=7, minutes=59)) is not None
        assert await find_session(conn, session.session_id, T0 + timedelta(hours=8)) is None
        assert await find_session(conn, "not-a-session", T0) is None

        again = await redeem_signin_link(conn, await issue_signin_link(conn, DSL, T0, timedelta(minutes=15)), T0,
                                         timedelta(hours=8), lambda e: None)
        assert again is not None
        await end_session(conn, again.session_id, T0 + timedelta(minutes=5))
        assert await find_session(conn, again.session_id, T0 + timedelta(minutes=5)) is None


async def test_the_web_role_cannot_delete_or_rewrite_signin_links(pool) -> None:
    import asyncpg

    async with pool.acquire() as conn:
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.execute("DELETE FROM signin_links")


async def test_an_address_gets_at_most_five_live_links_so_the_form_cannot_flood_an_inbox(pool) -> None:
    ttl = timedelta(minutes=15)
    async with pool.acquire() as conn:
        links = [await issue_signin_link(conn, DSL, T0 + timedelta(minutes=i), ttl) for i in range(5)]
        assert all(links)
        assert await issue_signin_link(conn, DSL, T0 + timedelta(minutes=5), ttl) is None
        other = Member("head@school-a.example", "B. Khan", "school-a", "Alder Primary School", "headteacher")
        assert await issue_signin_link(conn, other, T0 + timedelta(minutes=5), ttl) is not None
        assert await issue_signin_link(conn, DSL, T0 + timedelta(minutes=15, seconds=1), ttl) is not None
