"""/ack/{token}: the one-button page an acknowledgement link opens (notify's ACK_PATH).

GET only shows what the link is for and never acknowledges: mail scanners and link previews open links.
POST acknowledges through `Intake.acknowledge`, exactly as the API does with the link token as Bearer, so
one-time use (used_ack_tokens) and the incidents.acknowledged event are the same.
"""

from __future__ import annotations

from html import escape
from typing import Annotated
from urllib.parse import quote
from uuid import UUID

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse

from common.tokens import AckLinkClaims, TokenError, TokenExpired, verify_ack_token
from intake import store
from intake.auth import AckLink
from intake.problems import AckLinkUsed, IncidentNotAccessible
from intake.service import Intake

router = APIRouter(tags=["acknowledgement page"], include_in_schema=False)

_HEADERS = {
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",  # the token is in the URL
    "X-Robots-Tag": "noindex, nofollow",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; "
                               "frame-ancestors 'none'; base-uri 'none'",
}

_STYLE = ("body{font-family:system-ui,sans-serif;max-width:36rem;margin:2rem auto;padding:0 1rem;"
          "line-height:1.5;color:#111;background:#fff}"
          "button{font-size:1.25rem;padding:.75rem 1.5rem;border:2px solid #0b0c0c;background:#00703c;"
          "color:#fff;cursor:pointer}button:focus{outline:3px solid #fd0;outline-offset:2px}"
          "dt{font-weight:bold}dd{margin:0 0 .5rem 0}")


class _LinkRefused(Exception):
    def __init__(self, status: int, title: str, message: str) -> None:
        super().__init__(title)
        self.status = status
        self.title = title
        self.message = message


_USED = _LinkRefused(410, "This link has already been used",
                     "Each acknowledgement link works once. Sign in to see who acknowledged the incident.")
_UNKNOWN = _LinkRefused(404, "Incident not found",
                        "This link does not match an incident we hold. Contact your safeguarding lead.")


def _page(title: str, body: str, status: int = 200) -> HTMLResponse:
    document = (
        '<!DOCTYPE html>\n<html lang="en-GB">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        '<meta name="robots" content="noindex, nofollow">\n'
        f"<title>{escape(title)}</title>\n<style>{_STYLE}</style>\n</head>\n<body>\n<main>\n"
        f"<h1>{escape(title)}</h1>\n{body}\n</main>\n</body>\n</html>\n"
    )
    return HTMLResponse(document, status_code=status, headers=_HEADERS)


def _refused(exc: _LinkRefused) -> HTMLResponse:
    return _page(exc.title, f'<p role="alert">{escape(exc.message)}</p>', exc.status)


def _claims(request: Request, token: str) -> AckLinkClaims:
    try:
        claims = verify_ack_token(token, request.app.state.settings.token_secret)
    except TokenExpired:
        raise _LinkRefused(410, "This link has expired",
                           "Acknowledgement links expire. Sign in to acknowledge the incident.") from None
    except TokenError:
        raise _LinkRefused(400, "This link is not valid",
                           "The link may have been cut short or changed. Use the full link from the message, "
                           "or sign in to acknowledge the incident.") from None
    try:
        UUID(claims.incident_id)
    except ValueError:
        raise _UNKNOWN from None
    return claims


async def _intake(request: Request) -> Intake:  # async: a plain def would run in a worker thread
    service: Intake = request.app.state.intake
    return service


def _details(school: str, reference: str, incident_class: str | None) -> str:
    rows = [("School", school), ("Incident reference", reference),
            ("Class", incident_class or "Not yet classed")]
    items = "".join(f"<dt>{escape(k)}</dt><dd>{escape(v)}</dd>" for k, v in rows)
    return f"<dl>{items}</dl>"


@router.get("/ack/{token}", response_class=HTMLResponse)
async def ack_page(request: Request, token: str) -> HTMLResponse:
    """Shows the incident and one button; spends nothing and changes nothing."""
    try:
        claims = _claims(request, token)
        async with request.app.state.runtime.pool.acquire() as conn:
            if await conn.fetchval("SELECT 1 FROM used_ack_tokens WHERE token_id = $1", claims.token_id):
                raise _USED
            row = await store.find_incident(conn, UUID(claims.incident_id), schools=[claims.school_id])
        if row is None:
            raise _UNKNOWN
    except _LinkRefused as exc:
        return _refused(exc)
    action = escape("/ack/" + quote(token, safe=""))
    body = (
        "<p>You have been sent this online-safety incident to acknowledge.</p>\n"
        f"{_details(row['school_id'], row['reference'], row['incident_class'])}\n"
        f'<p>Acknowledging as: {escape(claims.recipient_role)}</p>\n'
        f'<form method="post" action="{action}">\n'
        '<button type="submit">Acknowledge this incident</button>\n</form>'
    )
    return _page("Acknowledge incident", body)


@router.post("/ack/{token}", response_class=HTMLResponse)
async def ack_submit(request: Request, token: str, intake: Annotated[Intake, Depends(_intake)]) -> HTMLResponse:
    """Acknowledges once, through the same service call as the API."""
    pool = request.app.state.runtime.pool
    try:
        claims = _claims(request, token)
        incident_id = UUID(claims.incident_id)
        try:
            ack = await intake.acknowledge(pool, AckLink(claims), incident_id, None)
        except AckLinkUsed:
            raise _USED from None
        except IncidentNotAccessible:
            raise _UNKNOWN from None
    except _LinkRefused as exc:
        return _refused(exc)
    async with pool.acquire() as conn:
        row = await store.find_incident(conn, incident_id, schools=[claims.school_id])
    details = _details(row["school_id"], row["reference"], row["incident_class"]) if row is not None else ""
    body = (
        f'<p role="status">Thank you. The incident has been acknowledged as {escape(ack.role)} at '
        f'{escape(ack.at.strftime("%H:%M %Z on %d %B %Y"))}.</p>\n{details}\n'
        "<p>Follow your school's safeguarding procedure for what to do next.</p>"
    )
    return _page("Incident acknowledged", body)
