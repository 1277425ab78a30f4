"""Reports as a CPOMS-style integration would post them, for the triage domain tests."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from common.incident import IncidentReport


def pupil(year_group: str = "Year 9", **extra: Any) -> dict[str, Any]:
    return {"kind": "pupil", "identifier": "UPN-A123", "year_group": year_group, **extra}


def staff(staff_role: str = "teacher") -> dict[str, Any]:
    return {"kind": "staff", "staff_role": staff_role}


def build_report(
    category: str,
    description: str,
    subjects: list[dict[str, Any]] | None = None,
    *,
    risk_area: str = "content",
    child_at_immediate_risk: bool = False,
    school_id: str = "school-a",
) -> IncidentReport:
    return IncidentReport.model_validate(
        {
            "school_id": school_id,
            "reporter": {"role": "class teacher"},
            "occurred_at": datetime(2025, 1, 10, 14, 30, tzinfo=UTC),
            "where": "ICT suite",
            "category": category,
            "risk_area": risk_area,
            "subjects": subjects or [{"kind": "unknown"}],
            "description": description,
            "child_at_immediate_risk": child_at_immediate_risk,
        }
    )
