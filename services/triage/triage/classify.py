"""Classifies an incident report: the reporter's category first, then rules that can only raise severity."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import date, datetime

from pydantic import BaseModel, ConfigDict

from common.contracts import IncidentClass, Reason, Urgency
from common.incident import IncidentReport, RiskArea, Subject, SubjectKind
from triage.compiled_rules import CompiledRule, TextTest, compiled
from triage.rules import (
    CLASS_SEVERITY,
    URGENCY_SEVERITY,
    Rulebook,
    default_rulebook,
    more_serious_area,
    more_severe,
    more_urgent,
)


class Classification(BaseModel):
    """What triage decided about a report, and why (each reason names the rule that fired)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    incident_class: IncidentClass
    urgency: Urgency
    risk_area: RiskArea
    reasons: tuple[Reason, ...]
    reminder_codes: tuple[str, ...]
    circumstances: tuple[str, ...]
    child_at_immediate_risk: bool
    roles_standing_aside: tuple[str, ...] = ()
    rulebook_version: str = ""

    @property
    def rule_ids(self) -> tuple[str, ...]:
        return tuple(reason.rule for reason in self.reasons)


@dataclass(frozen=True)
class _Facts:
    """What the rules may look at in a report; computed once."""

    report: IncidentReport
    subject_kinds: frozenset[SubjectKind]
    staff_roles: frozenset[str]
    youngest_age: int | None
    special_educational_needs: bool
    _said: dict[int, bool] = field(default_factory=dict, compare=False)

    def says(self, test: TextTest) -> bool:
        """Whether the description matches `test`; each test is searched once per report, however many rules
        and passes ask."""
        found = self._said.get(id(test))
        if found is None:
            found = self._said[id(test)] = test.matches(self.report.description)
        return found


@dataclass
class _Verdict:
    """The running result: raised by each rule that fires, never lowered."""

    incident_class: IncidentClass
    urgency: Urgency
    risk_area: RiskArea
    child_at_immediate_risk: bool
    reasons: list[Reason] = field(default_factory=list)
    reminders: list[str] = field(default_factory=list)
    circumstances: list[str] = field(default_factory=list)
    staff_stand_aside: bool = False


def classify(report: IncidentReport, rulebook: Rulebook | None = None) -> Classification:
    """Classify `report`. Rules are applied in passes until none fires; each fires at most once: in each pass,
    every rule that holds against the verdict as it stood when the pass began fires, in the rulebook's order."""
    book = rulebook if rulebook is not None else default_rulebook()
    facts = _facts_of(report, book)
    verdict = _Verdict(
        incident_class=CLASS_SEVERITY[-1],
        urgency=URGENCY_SEVERITY[-1],
        risk_area=report.risk_area,
        child_at_immediate_risk=report.child_at_immediate_risk,
    )
    # What depends on the report alone is asked once; what depends on the verdict, in every pass.
    candidates = [r for r in compiled(book).by_category[report.category] if _report_fits(r, facts)]
    while candidates:
        due = [r for r in candidates if _verdict_fits(r, verdict) and _text_fits(r, facts)]
        if not due:
            break
        for rule in due:
            _apply(rule, verdict)
        candidates = [r for r in candidates if r not in due]
    standing_aside = sorted(facts.staff_roles) if verdict.staff_stand_aside else []
    return Classification(
        incident_class=verdict.incident_class,
        urgency=verdict.urgency,
        risk_area=verdict.risk_area,
        reasons=tuple(verdict.reasons),
        reminder_codes=tuple(verdict.reminders),
        circumstances=tuple(verdict.circumstances),
        child_at_immediate_risk=verdict.child_at_immediate_risk,
        roles_standing_aside=tuple(standing_aside),
        rulebook_version=book.version,
    )


def _facts_of(report: IncidentReport, book: Rulebook) -> _Facts:
    staff = [s for s in report.subjects if s.kind is SubjectKind.STAFF]
    roles = {book.role_of(s.staff_role) for s in staff}
    ages = [a for s in report.subjects if (a := _youngest_possible_age(s, report.occurred_at)) is not None]
    return _Facts(
        report=report,
        subject_kinds=frozenset(s.kind for s in report.subjects),
        staff_roles=frozenset(r for r in roles if r is not None),
        youngest_age=min(ages) if ages else None,
        special_educational_needs=any(s.special_educational_needs for s in report.subjects),
    )


def _youngest_possible_age(subject: Subject, on: datetime) -> int | None:
    """The youngest a pupil can be, from their age, date of birth or year group. A pupil in Year N is N + 4 on the
    first of September and N + 5 by the end of the year: counting N + 4 means a Year 8 pupil counts as under 13,
    as each of them is until their birthday in that year (uncertainty raises severity, never lowers it)."""
    if subject.kind is not SubjectKind.PUPIL:
        return None
    age: int | None = subject.age
    if age is not None:
        return age
    if subject.date_of_birth is not None:
        born: date = subject.date_of_birth.date()
        day = on.date()
        years: int = day.year - born.year - ((day.month, day.day) < (born.month, born.day))
        return years
    year_group = (subject.year_group or "").strip().lower()
    if year_group in {"nursery", "reception"}:
        return 3 if year_group == "nursery" else 4
    match = re.fullmatch(r"(?:year|y)\s*(\d{1,2})", year_group)
    return int(match.group(1)) + 4 if match else None


def _report_fits(rule: CompiledRule, facts: _Facts) -> bool:
    """The conditions on the report's subjects (its category is already known to fit)."""
    if rule.subject_kinds and not facts.subject_kinds & rule.subject_kinds:
        return False
    if rule.subject_staff_roles and not facts.staff_roles & rule.subject_staff_roles:
        return False
    if rule.subject_younger_than is not None and (
        facts.youngest_age is None or facts.youngest_age >= rule.subject_younger_than
    ):
        return False
    return not rule.subject_has_special_educational_needs or facts.special_educational_needs


def _verdict_fits(rule: CompiledRule, verdict: _Verdict) -> bool:
    if rule.classes and verdict.incident_class not in rule.classes:
        return False
    return not rule.child_at_immediate_risk or verdict.child_at_immediate_risk


def _text_fits(rule: CompiledRule, facts: _Facts) -> bool:
    """The text patterns, the costly part: asked last, only of rules whose other conditions hold."""
    if rule.says is not None and not facts.says(rule.says):
        return False
    return rule.also_says is None or facts.says(rule.also_says)


def _apply(compiled_rule: CompiledRule, verdict: _Verdict) -> None:
    raises = compiled_rule.rule.raises
    if raises.incident_class is not None:
        verdict.incident_class = more_severe(verdict.incident_class, raises.incident_class)
    if raises.urgency is not None:
        verdict.urgency = more_urgent(verdict.urgency, raises.urgency)
    if raises.risk_area is not None:
        verdict.risk_area = more_serious_area(verdict.risk_area, raises.risk_area)
    verdict.child_at_immediate_risk = verdict.child_at_immediate_risk or raises.child_at_immediate_risk
    verdict.staff_stand_aside = verdict.staff_stand_aside or raises.staff_subject_stands_aside
    verdict.reminders.extend(c for c in raises.reminders if c not in verdict.reminders)
    verdict.circumstances.extend(c for c in raises.circumstances if c not in verdict.circumstances)
    verdict.reasons.append(compiled_rule.reason)
