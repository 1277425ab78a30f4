"""Sign-in by a one-time link sent by email, sign-out, and the acknowledgement page a notification's link opens.

Neither link does anything on GET (mail scanners open every link in a message): each opens a page with one
button, and only that POST, with its CSRF token, signs in or acknowledges."""

from __future__ import annotations

import re
from email.message import EmailMessage
from typing import Annotated
from urllib.parse import quote

import structlog
from fastapi import APIRouter, Form, Request
from fastapi.responses import Response
from starlette.background import BackgroundTask

from common.tokens import TokenError, TokenExpired, verify_ack_token
from web import mail
from web.apis import ApiError
from web.desk import class_label, role_label
from web.members import Member, View
from web.pages import (
    Refused,
    apis,
    check_csrf,
    cookies,
    current_session,
    directory,
    now,
    redirect,
    render,
    settings,
)
from web.security import SESSION_COOKIE
from web.sessions import end_session, issue_signin_link, link_is_usable, redeem_signin_link

log = structlog.get_logger(__name__)
router = APIRouter()
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
Csrf = Annotated[str | None, Form()]


@router.get("/")
async def home(request: Request) -> Response:
    session = await current_session(request)
    if session is None:
        return redirect("/sign-in")
    return redirect("/desk" if session.view is View.DESK else "/report")


@router.get("/sign-in")
async def sign_in_form(request: Request) -> Response:
    return render(request, "sign_in.html", None, email="", errors={}, error_items=[],
                  signed_out="signed-out" in request.query_params)


@router.post("/sign-in")
async def sign_in_request(request: Request, csrf_token: Csrf = None, email: Annotated[str, Form()] = "") -> Response:
    check_csrf(request, None, csrf_token)
    email = email.strip()
    if not email:
        errors = {"email": "Enter your email address"}
    elif not _EMAIL.match(email) or len(email) > 254:
        errors = {"email": "Enter an email address in the correct format, like name@school.example"}
    else:
        errors = {}
    if errors:
        return render(request, "sign_in.html", None, status=400, email=email, errors=errors,
                      error_items=list(errors.items()), signed_out=False)
    member = directory(request).find(email)
    response = render(request, "check_email.html", None, email=email, minutes=settings(request).signin_link_minutes)
    if member is not None:  # the same page either way, sent before the mail: it must not tell who is a member
        cfg = settings(request)
        async with request.app.state.runtime.pool.acquire() as conn:
            token = await issue_signin_link(conn, member, now(request), cfg.signin_ttl)
        if token is None:
            log.warning("web.signin_links_limited", school_id=member.school_id, role=member.role)
        else:
            link = f"{cfg.public_base_url.rstrip('/')}/sign-in/{token}"
            message = mail.signin_message(member, link, cfg.signin_ttl, cfg.mail_from)
            response.background = BackgroundTask(_send_signin_mail, message, cfg.smtp_host, cfg.smtp_port, member)
    return response


async def _send_signin_mail(message: EmailMessage, host: str, port: int, member: Member) -> None:
    try:
        await mail.send(message, host, port)
    except Exception:  # after the response: nobody to tell but the log
        log.exception("web.signin_link_not_sent", school_id=member.school_id, role=member.role)
        return
    log.info("web.signin_link_sent", school_id=member.school_id, role=member.role)


@router.get("/sign-in/{token}")
async def sign_in_page(request: Request, token: str) -> Response:
    async with request.app.state.runtime.pool.acquire() as conn:
        usable = await link_is_usable(conn, token, now(request))
    if not usable:
        raise Refused(410, "This sign-in link has expired or has been used",
                      "Each sign-in link works once, for a short time. Ask for a new one on the sign-in page.")
    return render(request, "sign_in_confirm.html", None, action=f"/sign-in/{quote(token, safe='')}")


@router.post("/sign-in/{token}")
async def sign_in_confirm(request: Request, token: str, csrf_token: Csrf = None) -> Response:
    check_csrf(request, None, csrf_token)
    cfg = settings(request)
    people = directory(request)

    def name_of(email: str) -> str | None:
        member = people.find(email)
        return member.name if member else None

    async with request.app.state.runtime.pool.acquire() as conn:
        session = await redeem_signin_link(conn, token, now(request), cfg.session_ttl, name_of)
    if session is None:
        raise Refused(410, "This sign-in link has expired or has been used",
                      "Each sign-in link works once, for a short time. Ask for a new one on the sign-in page.")
    log.info("web.signed_in", school_id=session.school_id, role=session.role)
    response = redirect("/")
    cookies(request).set(response, SESSION_COOKIE, session.session_id, int(cfg.session_ttl.total_seconds()))
    return response


@router.post("/sign-out")
async def sign_out(request: Request, csrf_token: Csrf = None) -> Response:
    session = await current_session(request)
    if session is not None:
        check_csrf(request, session, csrf_token)
        async with request.app.state.runtime.pool.acquire() as conn:
            await end_session(conn, session.session_id, now(request))
    response = redirect("/sign-in?signed-out")
    cookies(request).clear(response, SESSION_COOKIE)
    return response


def _ack_claims(request: Request, token: str):  # type: ignore[no-untyped-def]
    try:
        return verify_ack_token(token, settings(request).token_secret)
    except TokenExpired:
        raise Refused(410, "This link has expired",
                      "Acknowledgement links expire. Sign in to see the incident and acknowledge it.") from None
    except TokenError:
        raise Refused(400, "This link is not valid",
                      "The link may have been cut short or changed. Use the full link from the message, "
                      "or sign in to acknowledge the incident.") from None


_NOT_FOUND = Refused(404, "Incident not found",
                     "This link does not match an incident we hold. Contact your safeguarding lead.")
_USED = Refused(410, "This link has already been used",
                "Each acknowledgement link works once. Sign in to see who acknowledged the incident.")


@router.get("/ack/{token}")
async def ack_page(request: Request, token: str) -> Response:
    """Names the school, the incident reference and the class, with one button; changes nothing."""
    claims = _ack_claims(request, token)
    # Read with a person token for the link's own school and recipient role (minted here, never shown):
    # only the reference and the class are put on the page.
    reader = {"person_id": f"ack-link:{claims.notification_id}", "role": claims.recipient_role,
              "school_id": claims.school_id}
    try:
        incident = await apis(request).incident(reader, claims.incident_id)
    except ApiError as exc:
        if exc.status in (401, 403, 404, 422):
            raise _NOT_FOUND from None
        raise
    return render(request, "ack.html", None, school=directory(request).school_name(claims.school_id),
                  reference=incident["reference"], incident_class=class_label(incident.get("incident_class")),
                  role=role_label(claims.recipient_role), action=f"/ack/{quote(token, safe='')}")


@router.post("/ack/{token}")
async def ack_submit(request: Request, token: str, csrf_token: Csrf = None) -> Response:
    check_csrf(request, None, csrf_token)
    claims = _ack_claims(request, token)
    try:
        ack = await apis(request).acknowledge_with_link(token, claims.incident_id)
    except ApiError as exc:
        if exc.status in (409, 410):
            raise _USED from None
        if exc.status in (403, 404):
            raise _NOT_FOUND from None
        raise
    log.info("web.acknowledged_by_link", school_id=claims.school_id, role=claims.recipient_role)
    return render(request, "ack_done.html", None, school=directory(request).school_name(claims.school_id),
                  role=role_label(ack.get("role")), at=ack.get("at"))
