"""Secrets of the web app: one-time sign-in links, session ids and CSRF tokens (pure functions, no I/O).

Only SHA-256 digests of sign-in links and session ids are stored. A CSRF token is an HMAC of what the form is
bound to (the session, or before sign-in a random cookie), keyed from TOKEN_SECRET under its own label, so it
cannot be made without the secret and one page's token is useless in another person's session.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass

from starlette.responses import Response

_CSRF_LABEL = b"online-safety-escalation/web/csrf/v1"
SESSION_COOKIE = "session"
ANON_COOKIE = "form"  # binds the CSRF token of the forms shown before sign-in


def new_secret() -> str:
    """256 random bits, URL-safe: a sign-in link's token or a session id."""
    return secrets.token_urlsafe(32)


def digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def csrf_token(key: str, binding: str) -> str:
    mac_key = hmac.new(key.encode(), _CSRF_LABEL, hashlib.sha256).digest()
    return hmac.new(mac_key, binding.encode(), hashlib.sha256).hexdigest()


def csrf_ok(key: str, binding: str | None, submitted: str | None) -> bool:
    if not binding or not submitted:
        return False
    return hmac.compare_digest(csrf_token(key, binding), submitted)


@dataclass(frozen=True)
class CookiePolicy:
    """HttpOnly and SameSite=Lax always (Lax: a link from an email still arrives signed in, while a form posted
    from another site does not carry the cookie); Secure except on plain HTTP at this machine's own address."""

    secure: bool

    def name(self, base: str) -> str:
        # The __Host- prefix makes the browser refuse the cookie unless Secure, path=/ and no Domain.
        return f"__Host-{base}" if self.secure else base

    def set(self, response: Response, base: str, value: str, max_age: int | None = None) -> None:
        response.set_cookie(self.name(base), value, max_age=max_age, path="/", secure=self.secure, httponly=True,
                            samesite="lax")

    def clear(self, response: Response, base: str) -> None:
        response.delete_cookie(self.name(base), path="/", secure=self.secure, httponly=True, samesite="lax")
