"""The governors' report: audit's termly report as charts and a CSV, and the evidence log's state in words.

Governors' person tokens carry a governor role, so audit itself leaves out pupil-identifying fields; this page
shows aggregates only in any case, and the CSV passes only audit's aggregate rows."""

from __future__ import annotations

from datetime import UTC, date, datetime, time
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import PlainTextResponse, Response

from web.members import View
from web.pages import HEADERS, apis, check_csrf, now, render, require, who
from web.report import RISK_LABELS, bars, class_bars, duration, evidence_words, governor_csv
from web.sessions import Session

router = APIRouter()


def _period(request: Request) -> tuple[dict[str, str], dict[str, str], dict[str, str]]:
    """The from/to dates asked for (YYYY-MM-DD), as audit's query, as typed, and any errors in words."""
    params: dict[str, str] = {}
    typed: dict[str, str] = {}
    errors: dict[str, str] = {}
    for name, label in (("from", "start"), ("to", "end")):
        value = (request.query_params.get(name) or "").strip()
        typed[name] = value
        if not value:
            continue
        try:
            day = date.fromisoformat(value)
        except ValueError:
            errors[name] = f"Enter the {label} date as a date, like 2026-09-01"
            continue
        params[name] = datetime.combine(day, time(0), tzinfo=UTC).isoformat()
    return params, typed, errors


async def _report_page(request: Request, session: Session, *, checked_now: bool) -> Response:
    params, typed, errors = _period(request)
    report: dict[str, Any] = await apis(request).audit_json(who(session), "/reports/termly",
                                                            {} if errors else params)
    verified = await apis(request).audit_json(who(session), "/verify")
    intact, words = evidence_words(verified)
    ack = report["time_to_first_acknowledgement_seconds"]
    query = "&".join(f"{k}={v}" for k, v in typed.items() if v and k not in errors)
    return render(
        request, "report.html", session, status=400 if errors else 200, report=report,
        class_bars=class_bars(report["by_class"]), risk_bars=bars(report["by_risk_area"], RISK_LABELS),
        agency_bars=bars(report["referrals_by_agency"]), p50=duration(ack["p50"]), p90=duration(ack["p90"]),
        intact=intact, evidence=words, checked_now=checked_now, checked_at=now(request), typed=typed,
        errors=errors, error_items=list(errors.items()), csv_url="/report.csv" + (f"?{query}" if query else ""),
    )


@router.get("/report")
async def report_page(request: Request) -> Response:
    session = await require(request, View.REPORT)
    return await _report_page(request, session, checked_now=False)


@router.post("/report/verify")
async def verify_now(request: Request) -> Response:
    session = await require(request, View.REPORT)
    form = await request.form()
    token = form.get("csrf_token")
    check_csrf(request, session, token if isinstance(token, str) else None)
    return await _report_page(request, session, checked_now=True)


@router.get("/report.csv")
async def report_csv(request: Request) -> Response:
    session = await require(request, View.REPORT)
    params, _, errors = _period(request)
    text = await apis(request).audit_text(who(session), "/reports/termly",
                                          {**({} if errors else params), "format": "csv"})
    headers = {**HEADERS, "Content-Disposition": 'attachment; filename="termly-report.csv"'}
    return PlainTextResponse(governor_csv(text), media_type="text/csv", headers=headers)
