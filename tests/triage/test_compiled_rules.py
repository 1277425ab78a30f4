"""The compiled rulebook asks the same questions as the rules as written: the same class, urgency, risk area,
reasons (which rule fired, in order), reminders and circumstances, for every report."""

from __future__ import annotations

import itertools
import re
from typing import Any

import pytest

from common.contracts import IncidentClass, Urgency
from common.incident import Category, IncidentReport, RiskArea
from triage.classify import _facts_of, classify
from triage.compiled_rules import TextTest, compiled
from triage.rules import (
    CLASS_SEVERITY,
    URGENCY_SEVERITY,
    Conditions,
    Rulebook,
    default_rulebook,
    more_serious_area,
    more_severe,
    more_urgent,
)

from .builders import build_report, pupil, staff
from .test_classify import RAISING_TEXTS
from .test_triage_table import CASES


def classify_as_written(report: IncidentReport, book: Rulebook) -> dict[str, Any]:
    """The rules read one by one, every pattern searched on its own: the meaning of `rules.yaml`."""
    facts = _facts_of(report, book)
    state: dict[str, Any] = {
        "class": CLASS_SEVERITY[-1], "urgency": URGENCY_SEVERITY[-1], "risk_area": report.risk_area,
        "at_risk": report.child_at_immediate_risk, "reasons": [], "reminders": [], "circumstances": [],
        "stand_aside": False,
    }

    def says(patterns: tuple[re.Pattern[str], ...]) -> bool:
        return any(p.search(report.description) for p in patterns)

    def holds(when: Conditions) -> bool:
        return (
            (not when.categories or report.category in when.categories)
            and report.category not in when.not_categories
            and (not when.classes or state["class"] in when.classes)
            and (not when.subject_kinds or bool(facts.subject_kinds & set(when.subject_kinds)))
            and (not when.subject_staff_roles or bool(facts.staff_roles & set(when.subject_staff_roles)))
            and (when.subject_younger_than is None
                 or (facts.youngest_age is not None and facts.youngest_age < when.subject_younger_than))
            and (not when.subject_has_special_educational_needs or facts.special_educational_needs)
            and (not when.child_at_immediate_risk or state["at_risk"])
            and (not when.patterns or says(when.patterns))
            and (not when.with_patterns or says(when.with_patterns))
        )

    fired: set[str] = set()
    while due := [r for r in book.rules if r.id not in fired and holds(r.when)]:
        for rule in due:
            fired.add(rule.id)
            raises = rule.raises
            if raises.incident_class:
                state["class"] = more_severe(state["class"], raises.incident_class)
            if raises.urgency:
                state["urgency"] = more_urgent(state["urgency"], raises.urgency)
            if raises.risk_area:
                state["risk_area"] = more_serious_area(state["risk_area"], raises.risk_area)
            state["at_risk"] = state["at_risk"] or raises.child_at_immediate_risk
            state["stand_aside"] = state["stand_aside"] or raises.staff_subject_stands_aside
            state["reminders"] += [c for c in raises.reminders if c not in state["reminders"]]
            state["circumstances"] += [c for c in raises.circumstances if c not in state["circumstances"]]
            state["reasons"].append((rule.id, rule.explanation))
    return {
        "incident_class": state["class"], "urgency": state["urgency"], "risk_area": state["risk_area"],
        "child_at_immediate_risk": state["at_risk"], "reasons": state["reasons"],
        "reminder_codes": state["reminders"], "circumstances": state["circumstances"],
        "roles_standing_aside": sorted(facts.staff_roles) if state["stand_aside"] else [],
    }


def classified(report: IncidentReport, book: Rulebook) -> dict[str, Any]:
    c = classify(report, book)
    return {
        "incident_class": c.incident_class, "urgency": c.urgency, "risk_area": c.risk_area,
        "child_at_immediate_risk": c.child_at_immediate_risk,
        "reasons": [(r.rule, r.explanation) for r in c.reasons], "reminder_codes": list(c.reminder_codes),
        "circumstances": list(c.circumstances), "roles_standing_aside": list(c.roles_standing_aside),
    }


SUBJECTS = [
    None,
    [pupil("Year 5")],
    [pupil("Year 10", special_educational_needs=True)],
    [staff("Headteacher")],
    [staff("designated safeguarding lead"), pupil("Reception")],
    [{"kind": "visitor"}, pupil("", age=19)],
]
TEXTS = [*RAISING_TEXTS, *(c.description for c in CASES)]


def test_every_table_report_is_classified_as_the_rules_are_written() -> None:
    book = default_rulebook()
    for case in CASES:
        report = build_report(case.category, case.description, case.subjects or None,
                              child_at_immediate_risk=case.immediate_risk)
        assert classified(report, book) == classify_as_written(report, book), case.name


@pytest.mark.parametrize("category", list(Category))
def test_every_category_text_and_subject_mix_is_classified_as_the_rules_are_written(category: Category) -> None:
    book = default_rulebook()
    for n, (description, subjects) in enumerate(itertools.product(TEXTS, SUBJECTS)):
        at_risk = n % 3 == 0
        report = build_report(category.value, description, subjects, child_at_immediate_risk=at_risk)
        assert classified(report, book) == classify_as_written(report, book), (description, subjects, at_risk)


def test_each_pattern_list_as_one_search_matches_exactly_when_one_of_its_patterns_does() -> None:
    book = default_rulebook()
    lists = {r.when.patterns for r in book.rules if r.when.patterns}
    lists |= {r.when.with_patterns for r in book.rules if r.when.with_patterns}
    joined = [(patterns, TextTest.of(patterns)) for patterns in lists]
    assert all(len(test.patterns) == 1 for _, test in joined)  # the shipped rules all join
    texts = [*TEXTS, "denuded", "nudes", "NUDES!", "a (nude)", "self-harm", "selfharming", "an adult, asked to meet"]
    for (patterns, test), text in itertools.product(joined, texts):
        assert test.matches(text) == any(p.search(text) for p in patterns), (patterns[0].pattern, text)


def rulebook_with_patterns(patterns: list[str]) -> Rulebook:
    """The default rulebook plus one text rule whose patterns are `patterns`."""
    book = default_rulebook()
    data = book.model_dump(mode="python")
    data["rules"] = [*data["rules"], {
        "id": "text.test-only", "explanation": "A test rule.",
        "when": {"patterns": patterns}, "raises": {"urgency": "immediate", "reminders": ["refer_at_once"]},
    }]
    for rule in data["rules"]:  # the compiled patterns go back as they were written
        for key in ("patterns", "with_patterns"):
            rule["when"][key] = [_as_written(p) for p in rule["when"].get(key, ())]
    return Rulebook.model_validate(data)


def _as_written(pattern: re.Pattern[str] | str) -> str:
    if isinstance(pattern, str):
        return pattern
    return pattern.pattern.removeprefix(r"(?<!\w)(?:").removesuffix(r")(?!\w)")


def test_patterns_that_cannot_share_one_search_are_searched_one_by_one_with_the_same_meaning() -> None:
    # A back-reference counts groups, and a group name may appear once per expression: not joined.
    book = rulebook_with_patterns([r"(bye)\s+\1", r"(?P<w>ha)(?P=w)", r"(?P<w>ho)(?P=w)"])
    [test] = [r.says for r in compiled(book).by_category[Category.OTHER] if r.rule.id == "text.test-only"]
    assert test is not None and len(test.patterns) == 3
    for text, expected in [("bye bye now", True), ("haha", True), ("hoho", True), ("bye hi", False), ("aha", False)]:
        report = build_report("other", text)
        assert ("text.test-only" in classify(report, book).rule_ids) is expected, text
        assert classified(report, book) == classify_as_written(report, book)


def test_a_rulebook_is_compiled_once_and_a_new_version_on_its_own() -> None:
    book = default_rulebook()
    assert compiled(book) is compiled(book)
    other = book.model_copy(update={"version": "another"})
    assert compiled(other) is not compiled(book) and compiled(other).book is other


def test_compiled_classification_keeps_the_severity_floor() -> None:
    report = build_report("child_sexual_abuse_imagery", "Only a cartoon, nothing serious.")
    c = classify(report)
    assert (c.incident_class, c.urgency, c.risk_area) == (IncidentClass.ILLEGAL, Urgency.IMMEDIATE, RiskArea.CONTENT)
