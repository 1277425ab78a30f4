"""The DSL's desk: open incidents most urgent first, and an incident page with its timeline and action forms."""

from __future__ import annotations

import re
from typing import Any
from uuid import UUID

import structlog
from fastapi import APIRouter, Request
from fastapi.responses import Response

from web.apis import ApiError
from web.desk import age, class_label, desk_rows, open_reminders, role_label, when
from web.forms import AGENCY_LABELS, FORM_TITLES, REFERRAL_CHOICES, check_action, form_for
from web.members import View
from web.pages import Refused, apis, check_csrf, now, redirect, render, require, who
from web.security import new_secret
from web.sessions import Session

log = structlog.get_logger(__name__)
_FORM_KEY = re.compile(r"[A-Za-z0-9_-]{20,64}")  # as web.security.new_secret makes them
router = APIRouter()

_NOT_FOUND = Refused(404, "Incident not found",
                     "There is no incident at this address in your school. Check the link, or go back to the desk.")
_TOPIC_WORDS = {
    "incidents.reported": "Reported", "incidents.triaged": "Triaged", "notifications.requested": "Notice sent",
    "notifications.delivered": "Notice delivered", "notifications.failed": "Notice failed",
    "incidents.acknowledged": "Acknowledged", "incidents.escalated": "Escalated",
    "incidents.actions": "Action recorded",
}


@router.get("/desk")
async def desk(request: Request) -> Response:
    session = await require(request, View.DESK)
    found = await apis(request).audit_json(who(session), "/incidents")
    rows = desk_rows(found["incidents"], now(request))
    return render(request, "desk.html", session, rows=rows)


def _timeline_entry(entry: dict[str, Any]) -> dict[str, str]:
    summary = entry.get("summary") or {}
    words = []
    for key, value in summary.items():
        if value in (None, [], ""):
            continue
        if key in ("told", "acknowledged_by"):
            value = role_label(str(value))
        if isinstance(value, list):
            value = ", ".join(str(v) for v in value)
        words.append(f"{key.replace('_', ' ')}: {value}")
    topic = str(entry.get("topic", ""))
    what = next((w for t, w in _TOPIC_WORDS.items() if topic.endswith(t)), str(entry.get("type", "")))
    at = when(entry.get("time") or entry.get("recorded_at"))
    return {"when": at.strftime("%d %b %Y %H:%M:%S UTC") if at else "",
            "what": what, "details": "; ".join(words)}


async def _incident_page(request: Request, session: Session, incident_id: str, *, status: int = 200,
                         form_errors: dict[str, dict[str, str]] | None = None,
                         form_values: dict[str, dict[str, str]] | None = None, done: str | None = None) -> Response:
    try:
        UUID(incident_id)
    except ValueError:
        raise _NOT_FOUND from None
    try:
        incident = await apis(request).incident(who(session), incident_id)
    except ApiError as exc:
        if exc.status in (403, 404):  # another school's incident is "not found", never "forbidden"
            raise _NOT_FOUND from None
        raise
    if incident.get("school_id") != session.school_id:
        raise _NOT_FOUND
    found = await apis(request).audit_json(who(session), "/incidents")
    state = next((s for s in found["incidents"] if s["incident_id"] == incident_id), None)
    try:
        timeline = await apis(request).audit_json(who(session), f"/incidents/{incident_id}/timeline",
                                                  {"pupil_fields": "true"})
        entries = [_timeline_entry(e) for e in timeline["entries"]]
    except ApiError as exc:
        if exc.status != 404:
            raise
        entries = []  # audit has not seen the incident's events yet
    reminders = []
    for r in open_reminders(state, now(request)) if state else []:
        form = form_for(r.code, has_due_time=r.due_at is not None)
        reminders.append({"reminder": r, "owner": role_label(r.owner_role),
                          "form": form[0] if form else None, "agencies": form[1] if form else (),
                          "options": [(a, AGENCY_LABELS[a]) for a in (form[1] if form else ())]})
    errors = form_errors or {}
    # The error summary links each message to its field (the form-wide message to the form's own paragraph).
    items = [(f"{form_id}-{name}", message) for form_id, fields in errors.items() for name, message in fields.items()]
    return render(
        request, "incident.html", session, status=status, incident=incident, entries=entries, reminders=reminders,
        class_name=class_label(incident.get("incident_class")), since=age(when(incident.get("received_at")),
                                                                            now(request)),
        role_label=role_label, agency_labels=AGENCY_LABELS, referral_choices=REFERRAL_CHOICES,
        form_titles=FORM_TITLES, form_key=new_secret(), errors=errors, error_items=items, values=form_values or {},
        done=done,
        closed=incident.get("status") == "closed",
    )


def _form_key(values: dict[str, str]) -> str | None:
    key = values.get("idempotency_key", "")
    return key if _FORM_KEY.fullmatch(key) else None


@router.get("/incidents/{incident_id}")
async def incident_page(request: Request, incident_id: str) -> Response:
    session = await require(request, View.DESK)
    done = request.query_params.get("done")
    return await _incident_page(request, session, incident_id, done=FORM_TITLES.get(done or ""))


@router.post("/incidents/{incident_id}/actions/{kind}")
async def record_action(request: Request, incident_id: str, kind: str) -> Response:
    session = await require(request, View.DESK)
    form = await request.form()
    values = {k: str(v) for k, v in form.items() if isinstance(v, str)}
    check_csrf(request, session, values.get("csrf_token"))
    form_id = values.get("form_id") or kind
    agencies = tuple(a for a in values.get("agencies", "").split(",") if a) or REFERRAL_CHOICES
    checked = check_action(kind, values, agencies)
    if checked.body is not None:
        try:
            await apis(request).record_action(who(session), incident_id, checked.body, _form_key(values))
        except ApiError as exc:
            if exc.status in (403, 404) and exc.problem != "not-in-escalation-chain":
                raise _NOT_FOUND from None
            if exc.status not in (400, 403, 409, 422):
                raise
            checked.errors = {"form": f"The action was not recorded: {exc.detail}"}
        else:
            log.info("web.action_recorded", school_id=session.school_id, action=checked.body["action"])
            return redirect(f"/incidents/{incident_id}?done={kind}")
    values.pop("csrf_token", None)
    return await _incident_page(request, session, incident_id, status=400, form_errors={form_id: checked.errors},
                                form_values={form_id: values})
