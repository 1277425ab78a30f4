"""Example requests shown in the OpenAPI document (and used by the tests as a starting point)."""

from __future__ import annotations

from typing import Any

REPORT_EXAMPLES: dict[str, Any] = {
    "inappropriate_access": {
        "school_id": "school-a",
        "reporter": {"role": "class teacher", "name": "J. Smith"},
        "occurred_at": "2025-03-04T10:15:00+00:00",
        "where": "ICT suite",
        "category": "inappropriate_access_accidental",
        "risk_area": "content",
        "subjects": [{"kind": "pupil", "identifier": "UPN-A123", "year_group": "Year 6"}],
        "description": "Pupil opened an unsuitable site by mistake and told the teacher at once.",
        "child_at_immediate_risk": False,
        "evidence": {
            "device": "school laptop asset 4471",
            "location": "ICT suite, locked trolley",
            "secured_by": "IT technician",
            "secured_at": "2025-03-04T10:30:00+00:00",
            "isolated_from_network": True,
        },
    },
    "youth_produced_imagery": {
        "school_id": "school-a",
        "reporter": {"role": "head of year"},
        "occurred_at": "2025-03-05T08:40:00+00:00",
        "where": "Year 9 group chat",
        "category": "youth_produced_sexual_imagery",
        "risk_area": "conduct",
        "subjects": [{"kind": "pupil", "identifier": "UPN-B456", "age": 14}],
        "description": "A pupil says an image of them is being shared in a group chat. Not viewed by staff.",
        "child_at_immediate_risk": False,
        "evidence": {"device": "pupil's own phone", "location": "with the pupil; not taken",
                     "isolated_from_network": False},
    },
}

ACK_EXAMPLES: dict[str, Any] = {
    "person": {},
    "integration_for_staff": {"by": {"role": "dsl", "name": "A. Patel"}},
}

ACTION_EXAMPLES: dict[str, Any] = {
    "referral": {"action": "referral_made", "agency": "lado", "reference_number": "LADO-2025-0193"},
    "device_secured": {"action": "device_secured", "isolated_from_network": True},
    "parents_not_informed": {"action": "parents_not_informed",
                             "reason": "Informing parents would put the child at risk (social care advised)."},
    "reminder_done": {"action": "reminder_done", "reminder": "initial_review_meeting"},
    "closed": {"action": "incident_closed", "outcome": "Referred; site blocked by the filtering provider."},
}
