"""What log redaction scrubs: a pupil's name whole and in parts, free text whole, never ordinary words."""

from __future__ import annotations

from common.incident import sensitive_values


def test_names_are_scrubbed_in_parts_and_free_text_only_whole():
    report = {
        "school_id": "school-c",
        "category": "lost_or_stolen_equipment",
        "description": "A stolen laptop was left at the school gate",
        "subjects": [{"kind": "pupil", "name": "Amelia Hartley-Quinn", "date_of_birth": "2014-03-09"}],
    }
    found = sensitive_values(report)
    assert {"Amelia Hartley-Quinn", "Amelia", "Hartley-Quinn", "2014-03-09"} <= found
    assert "A stolen laptop was left at the school gate" in found
    assert not {"stolen", "school", "laptop", "gate"} & found
