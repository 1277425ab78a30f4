"""Classifies an incident report: the reporter's category first, then rules that can only raise severity."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import date, datetime

from pydantic import BaseModel, ConfigDict

from common.contracts import IncidentClass, Reason, Urgency
from common.incident import IncidentReport, RiskArea, Subject, SubjectKind
from triage.rules import (
    CLASS_SEVERITY,
    URGENCY_SEVERITY,
    Conditions,
    Rule,
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
    _searched: dict[re.Pattern[str], bool] = field(default_factory=dict, compare=False)

    def says_any(self, patterns: tuple[re.Pattern[str], ...]) -> bool:
        """Whether the description matches any of `patterns`; each pattern is searched once per report,
        however many passes the rules take."""
        for p in patterns:
            found = self._searched.get(p)
            if found is None:
                found = self._searched[p] = p.search(self.report.description) is not None
            if found:
                return True
        return False


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
    """Classify `report`. Rules are applied in passes until none fires; each fires at most once."""
    book = rulebook if rulebook is not None else default_rulebook()
    facts = _facts_of(report, book)
    verdict = _Verdict(
        incident_class=CLASS_SEVERITY[-1],
        urgency=URGENCY_SEVERITY[-1],
        risk_area=report.risk_area,
        child_at_immediate_risk=report.child_at_immediate_risk,
    )
    fired: set[str] = set()
    while True:
        due = [r for r in book.rules if r.id not in fired and _holds(r.when, facts, verdict)]
        if not due:
            break
        for rule in due:
            fired.add(rule.id)
            _apply(rule, verdict)
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
    ages = [a for s in report.subjects if (a := _oldest_possible_age(s, report.occurred_at)) is not None]
    return _Facts(
        report=report,
        subject_kinds=frozenset(s.kind for s in report.subjects),
        staff_roles=frozenset(r for r in roles if r is not None),
        youngest_age=min(ages) if ages else None,
        special_educational_needs=any(s.special_educational_needs for s in report.subjects),
    )


def _oldest_possible_age(subject: Subject, on: datetime) -> int | None:
    """The oldest a pupil can be, from their age, date of birth or year group (Year N: at most N + 5)."""
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
        return 5
    match = re.fullmatch(r"(?:year|y)\s*(\d{1,2})", year_group)
    return int(match.group(1)) + 5 if match else None


def _holds(when: Conditions, facts: _Facts, verdict: _Verdict) -> bool:
    """Every condition of `when` holds. The first that fails ends it, and the text patterns (most of the
    cost) come last, so they are searched only for rules whose other conditions all hold."""
    report = facts.report
    if when.categories and report.category not in when.categories:
        return False
    if report.category in when.not_categories:
        return False
    if when.classes and verdict.incident_class not in when.classes:
        return False
    if when.subject_kinds and not facts.subject_kinds.intersection(when.subject_kinds):
        return False
    if when.subject_staff_roles and not facts.staff_roles.intersection(when.subject_staff_roles):
        return False
    if when.subject_younger_than is not None and (
        facts.youngest_age is None or facts.youngest_age >= when.subject_younger_than
    ):
        return False
    if when.subject_has_special_educational_needs and not facts.special_educational_needs:
        return False
    if when.child_at_immediate_risk and not verdict.child_at_immediate_risk:
        return False
    if when.patterns and not facts.says_any(when.patterns):
        return False
    return not when.with_patterns or facts.says_any(when.with_patterns)


def _apply(rule: Rule, verdict: _Verdict) -> None:
    raises = rule.raises
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
    verdict.reasons.append(Reason(rule=rule.id, explanation=rule.explanation))
