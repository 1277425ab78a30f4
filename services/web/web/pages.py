"""What every page shares: templates (Jinja2, autoescaped), the signed-in session, CSRF binding, headers."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

from fastapi import Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from jinja2 import Environment, PackageLoader, select_autoescape

from web.apis import Apis
from web.config import WebSettings
from web.members import Directory, View, token_role
from web.security import ANON_COOKIE, SESSION_COOKIE, CookiePolicy, csrf_ok, csrf_token, new_secret
from web.sessions import Session, find_session

HEADERS = {
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",  # sign-in and acknowledgement links carry tokens in their paths
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
                               "font-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
}
TEMPLATES = Environment(loader=PackageLoader("web", "templates"), autoescape=select_autoescape(default=True))
ASSETS = Path(__file__).resolve().parents[1] / "node_modules" / "govuk-frontend" / "dist" / "govuk"


class Refused(Exception):
    """Show a page that says why (not signed in, not your school, not your role, a service down)."""

    def __init__(self, status: int, title: str, message: str) -> None:
        super().__init__(title)
        self.status = status
        self.title = title
        self.message = message


class SignInNeeded(Exception):
    pass


def settings(request: Request) -> WebSettings:
    value: WebSettings = request.app.state.settings
    return value


def apis(request: Request) -> Apis:
    value: Apis = request.app.state.apis
    return value


def directory(request: Request) -> Directory:
    value: Directory = request.app.state.directory
    return value


def now(request: Request) -> datetime:
    clock: Callable[[], datetime] = request.app.state.clock
    return clock()


def cookies(request: Request) -> CookiePolicy:
    return CookiePolicy(settings(request).secure_cookies)


async def current_session(request: Request) -> Session | None:
    session_id = request.cookies.get(cookies(request).name(SESSION_COOKIE))
    if not session_id:
        return None
    async with request.app.state.runtime.pool.acquire() as conn:
        return await find_session(conn, session_id, now(request))


async def require(request: Request, view: View | None = None) -> Session:
    """The signed-in person, allowed this view; otherwise a sign-in redirect or a refusal."""
    session = await current_session(request)
    if session is None:
        raise SignInNeeded
    if view is not None and session.view is not view and not (view is View.REPORT and session.view is View.DESK):
        raise Refused(403, "You cannot see this page", "Your role in the school does not include this page.")
    return session


def who(session: Session) -> dict[str, str]:
    return {"person_id": session.email, "role": token_role(session.role), "school_id": session.school_id}


def binding(request: Request, session: Session | None) -> tuple[str, str | None]:
    """What a form's CSRF token is bound to, and a new anonymous cookie value to set when there was none."""
    if session is not None:
        return session.session_id, None
    existing = request.cookies.get(cookies(request).name(ANON_COOKIE))
    if existing:
        return existing, None
    fresh = new_secret()
    return fresh, fresh


def check_csrf(request: Request, session: Session | None, submitted: str | None) -> None:
    bound = session.session_id if session is not None else request.cookies.get(cookies(request).name(ANON_COOKIE))
    if not csrf_ok(settings(request).token_secret, bound, submitted):
        raise Refused(400, "This form has expired",
                      "For your security, forms work only in the browser session that showed them. "
                      "Go back, reload the page and try again.")


def render(request: Request, template: str, session: Session | None, status: int = 200, **context: Any) -> Response:
    bound, fresh = binding(request, session)
    html = TEMPLATES.get_template(template).render(
        session=session, csrf=csrf_token(settings(request).token_secret, bound),
        school_name=directory(request).school_name(session.school_id) if session else None,
        View=View, **context,
    )
    response = HTMLResponse(html, status_code=status, headers=HEADERS)
    if fresh is not None:
        cookies(request).set(response, ANON_COOKIE, fresh)
    return response


def redirect(url: str) -> Response:
    return RedirectResponse(url, status_code=303, headers=HEADERS)
