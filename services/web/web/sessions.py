"""Sign-in links and sessions in the web schema: a link works once and expires; a session expires too."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

import asyncpg

from web.members import Member, View, view_of
from web.security import digest, new_secret


@dataclass(frozen=True)
class Session:
    session_id: str
    email: str
    name: str
    school_id: str
    role: str
    expires_at: datetime

    @property
    def view(self) -> View | None:
        return view_of(self.role)


MAX_LIVE_LINKS = 5  # per address within a link's lifetime: a form cannot be used to flood someone's inbox


async def issue_signin_link(
    conn: asyncpg.Connection, member: Member, now: datetime, ttl: timedelta
) -> str | None:
    """A new one-time link, or None when the address already has MAX_LIVE_LINKS issued within `ttl`."""
    recent = await conn.fetchval(
        "SELECT count(*) FROM signin_links WHERE email = $1 AND created_at > $2", member.email, now - ttl
    )
    if recent >= MAX_LIVE_LINKS:
        return None
    token = new_secret()
    await conn.execute(
        "INSERT INTO signin_links (token_sha256, email, school_id, role, created_at, expires_at)"
        " VALUES ($1, $2, $3, $4, $5, $6)",
        digest(token), member.email, member.school_id, member.role, now, now + ttl,
    )
    return token


async def link_is_usable(conn: asyncpg.Connection, token: str, now: datetime) -> bool:
    """For the page a link opens (GET): says whether the button will work, spends nothing."""
    return bool(await conn.fetchval(
        "SELECT 1 FROM signin_links WHERE token_sha256 = $1 AND used_at IS NULL AND expires_at > $2",
        digest(token), now,
    ))


async def redeem_signin_link(
    conn: asyncpg.Connection, token: str, now: datetime, ttl: timedelta, name_of: Callable[[str], str | None]
) -> Session | None:
    """Spends the link (once, even under two concurrent clicks) and opens a session; None if spent or expired."""
    async with conn.transaction():
        row = await conn.fetchrow(
            "UPDATE signin_links SET used_at = $2 WHERE token_sha256 = $1 AND used_at IS NULL AND expires_at > $2"
            " RETURNING email, school_id, role",
            digest(token), now,
        )
        if row is None:
            return None
        name = name_of(row["email"]) or row["role"]
        session_id = new_secret()
        await conn.execute(
            "INSERT INTO sessions (session_sha256, email, name, school_id, role, created_at, expires_at)"
            " VALUES ($1, $2, $3, $4, $5, $6, $7)",
            digest(session_id), row["email"], name, row["school_id"], row["role"], now, now + ttl,
        )
    return Session(session_id, row["email"], name, row["school_id"], row["role"], now + ttl)


async def find_session(conn: asyncpg.Connection, session_id: str, now: datetime) -> Session | None:
    row = await conn.fetchrow(
        "SELECT email, name, school_id, role, expires_at FROM sessions WHERE session_sha256 = $1 AND expires_at > $2",
        digest(session_id), now,
    )
    if row is None:
        return None
    return Session(session_id, row["email"], row["name"] or row["role"], row["school_id"], row["role"],
                   row["expires_at"])


async def end_session(conn: asyncpg.Connection, session_id: str, now: datetime) -> None:
    """Signs out, and clears every expired session while here."""
    await conn.execute("DELETE FROM sessions WHERE session_sha256 = $1 OR expires_at <= $2", digest(session_id), now)
