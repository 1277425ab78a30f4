"""What log redaction scrubs: a pupil's name whole and in parts, free text whole, never ordinary words."""

from __future__ import annotations

from common.incident import sensitive_values
from common.logging import REDACTED, redact, sensitive


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


def test_a_full_name_is_redacted_before_its_parts_so_a_short_first_name_does_not_survive():
    names = ["Al Smith", "Bo Jones", "Cy Brown", "Di Evans", "Ed Price", "Flo Ng", "Guy Wu", "Hu Patel", "Io Khan",
             "Jo Reid", "Ki Lowe", "Lu Shah"]
    found = set().union(*(sensitive_values({"name": n}) for n in names))
    assert "Smith" in found and "Al" not in found  # two letters are too short to scrub on their own
    with sensitive(found):
        line = redact(None, "info", {"event": "x", "note": " / ".join(names)})
    assert line["note"] == " / ".join([REDACTED] * len(names))
