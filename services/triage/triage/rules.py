"""The triage rules as data: `rules.yaml` validated into frozen models, with the severity orders they raise on."""

from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, model_validator

from common.contracts import IncidentClass, Urgency
from common.incident import Category, RiskArea, SubjectKind
from triage.yamlsource import InvalidYamlFile, read_yaml, validate

RULES_FILE = Path(__file__).with_name("rules.yaml")

# Most severe first. Severity is only ever raised along these orders, never lowered.
CLASS_SEVERITY: tuple[IncidentClass, ...] = (
    IncidentClass.ILLEGAL,
    IncidentClass.YOUTH_PRODUCED_SEXUAL_IMAGERY,
    IncidentClass.ALLEGATION_ABOUT_STAFF,
    IncidentClass.INAPPROPRIATE,
    IncidentClass.SECURITY,
)
URGENCY_SEVERITY: tuple[Urgency, ...] = (Urgency.IMMEDIATE, Urgency.HIGH, Urgency.NORMAL, Urgency.LOW)
# A risk from another person reaching a child first; commerce last.
RISK_AREA_SEVERITY: tuple[RiskArea, ...] = (
    RiskArea.CONTACT,
    RiskArea.CONDUCT,
    RiskArea.CONTENT,
    RiskArea.COMMERCE,
)

CODE_PATTERN = r"^[a-z][a-z0-9_]*$"
Code = Annotated[str, Field(pattern=CODE_PATTERN)]


class RulebookError(InvalidYamlFile):
    """The rules file cannot be used; the message names the file, line, path and problem."""


WORD_BOUNDED = r"(?<!\w)(?:{})(?!\w)"  # a pattern as written -> the pattern searched


def _word_bounded(value: object) -> object:
    """Compile a pattern case-insensitively, bounded so that 'nude' does not match inside 'denuded'."""
    if not isinstance(value, str):
        return value
    try:
        return re.compile(WORD_BOUNDED.format(value), re.IGNORECASE)
    except re.error as exc:
        raise ValueError(f"pattern {value!r} is not a valid regular expression: {exc}") from None


TextPattern = Annotated[re.Pattern[str], BeforeValidator(_word_bounded)]


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Conditions(_Frozen):
    """When a rule fires: every condition given must hold."""

    categories: tuple[Category, ...] = ()
    not_categories: tuple[Category, ...] = ()
    classes: tuple[IncidentClass, ...] = Field(default=(), description="The class as raised so far.")
    subject_kinds: tuple[SubjectKind, ...] = ()
    subject_staff_roles: tuple[str, ...] = ()
    subject_younger_than: int | None = Field(default=None, ge=1, le=25)
    subject_has_special_educational_needs: bool = False
    child_at_immediate_risk: bool = False
    patterns: tuple[TextPattern, ...] = Field(default=(), description="The description matches any of these.")
    with_patterns: tuple[TextPattern, ...] = Field(default=(), description="...and also any of these.")

    @model_validator(mode="after")
    def _says_something(self) -> Conditions:
        if not any(getattr(self, name) for name in type(self).model_fields):
            raise ValueError("a rule needs at least one condition under 'when'")
        if self.with_patterns and not self.patterns:
            raise ValueError("'with_patterns' needs 'patterns' beside it")
        return self


class Raises(_Frozen):
    """What a rule raises. Class, urgency and risk area only ever go up; the rest accumulates."""

    incident_class: IncidentClass | None = None
    urgency: Urgency | None = None
    risk_area: RiskArea | None = None
    reminders: tuple[Code, ...] = ()
    circumstances: tuple[Code, ...] = ()
    child_at_immediate_risk: bool = False
    staff_subject_stands_aside: bool = Field(
        default=False, description="Staff who are the subject are not told; the policy's stand-in is."
    )


class Rule(_Frozen):
    id: str = Field(pattern=r"^[a-z]+(\.[a-z0-9-]+)+$", examples=["category.csam", "text.adult-meet"])
    explanation: str = Field(min_length=1, description="Why it matters; shown to recipients, so no report text.")
    when: Conditions
    raises: Raises


class Rulebook(_Frozen):
    staff_roles: dict[Code, tuple[str, ...]] = Field(
        description="Role name -> the ways a report may write it in a staff subject's 'staff_role'."
    )
    rules: tuple[Rule, ...] = Field(min_length=1)
    version: str = ""

    @model_validator(mode="after")
    def _complete(self) -> Rulebook:
        ids = [rule.id for rule in self.rules]
        repeated = sorted({i for i in ids if ids.count(i) > 1})
        if repeated:
            raise ValueError(f"rule ids must be unique; repeated: {', '.join(repeated)}")
        mapped = {c for rule in self.rules if rule.raises.incident_class is not None for c in rule.when.categories}
        missing = [c.value for c in Category if c not in mapped]
        if missing:
            raise ValueError(f"every category needs a rule that gives its class; missing: {', '.join(missing)}")
        return self

    def reminder_codes(self) -> dict[str, str]:
        """Every reminder code a rule can raise, with the id of the first rule that raises it."""
        codes: dict[str, str] = {}
        for rule in self.rules:
            for code in rule.raises.reminders:
                codes.setdefault(code, rule.id)
        return codes

    def circumstances(self) -> frozenset[str]:
        return frozenset(c for rule in self.rules for c in rule.raises.circumstances)

    def role_of(self, staff_role: str | None) -> str | None:
        """The role name for a staff subject's free-text role ('Head Teacher' -> 'headteacher')."""
        if not staff_role:
            return None
        wanted = " ".join(re.split(r"[\s_\-]+", staff_role.strip().lower()))
        for role, spellings in self.staff_roles.items():
            if wanted in {role.replace("_", " "), *(s.lower() for s in spellings)}:
                return role
        return None


def load_rulebook(file: Path = RULES_FILE) -> Rulebook:
    """Load and validate a rules file; raises `RulebookError` naming the file, line and path."""
    source = read_yaml(file, RulebookError)
    rulebook = validate(source, Rulebook, RulebookError)
    return rulebook.model_copy(update={"version": source.content_hash})


@lru_cache(maxsize=1)
def default_rulebook() -> Rulebook:
    return load_rulebook(RULES_FILE)


def more_severe(a: IncidentClass, b: IncidentClass) -> IncidentClass:
    return min(a, b, key=CLASS_SEVERITY.index)


def more_urgent(a: Urgency, b: Urgency) -> Urgency:
    return min(a, b, key=URGENCY_SEVERITY.index)


def more_serious_area(a: RiskArea, b: RiskArea) -> RiskArea:
    return min(a, b, key=RISK_AREA_SEVERITY.index)
