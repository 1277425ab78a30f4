"""The governors' report as page data: bars for the charts, times in words, the evidence log's state in plain
words (pure functions over audit's termly report and verification answers)."""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from typing import Any

from web.desk import class_label

RISK_LABELS = {"content": "Content", "contact": "Contact", "conduct": "Conduct", "commerce": "Commerce"}
_CSV_SECTIONS = frozenset({"period", "total", "by_class", "by_risk_area", "time_to_first_acknowledgement_seconds",
                           "referrals_by_agency"})


@dataclass(frozen=True)
class Bar:
    label: str
    count: int
    percent: int  # of the largest bar, for its width


def bars(counts: dict[str, int], labels: dict[str, str] | None = None) -> list[Bar]:
    top = max(counts.values(), default=0)
    return [Bar((labels or {}).get(k, k.replace("_", " ").capitalize()), v, round(100 * v / top) if top else 0)
            for k, v in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))]


def class_bars(by_class: dict[str, int]) -> list[Bar]:
    return bars({k: v for k, v in by_class.items()}, {k: class_label(k) for k in by_class})


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "no acknowledgements yet"
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds} second{'' if seconds == 1 else 's'}"
    minutes, secs = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} minute{'' if minutes == 1 else 's'}" + (f" {secs} s" if secs else "")
    hours, mins = divmod(minutes, 60)
    return f"{hours} hour{'' if hours == 1 else 's'} {mins} minute{'' if mins == 1 else 's'}"


def evidence_words(result: dict[str, Any]) -> tuple[bool, str]:
    """('intact: 12,408 records; 3 signed checkpoints verified') or where the log was found changed."""
    records = int(result.get("records", 0))
    checkpoints = int(result.get("checkpoints_verified", 0))
    if result.get("intact"):
        cps = f"{checkpoints:,} signed checkpoint{'' if checkpoints == 1 else 's'} verified"
        return True, f"Intact: {records:,} record{'' if records == 1 else 's'}; {cps}"
    problem = result.get("problem") or {}
    where = f" at record {problem['seq']:,}" if problem.get("seq") is not None else ""
    reason = problem.get("reason") or result.get("checkpoint_problem") or result.get("message") or "unknown"
    return False, (f"Not intact: the log was changed{where}. Intact up to record "
                   f"{int(result.get('intact_up_to', 0)):,} of {records:,}. Reason: {reason}")


def governor_csv(audit_csv: str) -> str:
    """Audit's aggregate CSV, passed on only row by row through known sections: no free text, no pupil field."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    for i, row in enumerate(csv.reader(io.StringIO(audit_csv))):
        if i == 0 or (len(row) == 3 and row[0] in _CSV_SECTIONS):
            writer.writerow(row)
    return out.getvalue()
