"""What an incident report says: the shared vocabulary of intake, triage and audit (DESIGN.md, seed 004)."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field


class Category(StrEnum):
    """The reporter's category: the starting point for triage, never lowered by it."""

    CHILD_SEXUAL_ABUSE_IMAGERY = "child_sexual_abuse_imagery"
    CRIMINALLY_OBSCENE_CONTENT = "criminally_obscene_content"
    INCITEMENT_TO_RACIAL_HATRED = "incitement_to_racial_hatred"
    TERRORIST_OR_EXTREMIST_CONTENT = "terrorist_or_extremist_content"
    ONLINE_GROOMING = "online_grooming"
    YOUTH_PRODUCED_SEXUAL_IMAGERY = "youth_produced_sexual_imagery"
    ALLEGATION_ABOUT_STAFF = "allegation_about_staff"
    STAFF_CONTACT_OUTSIDE_AGREED_CHANNELS = "staff_contact_outside_agreed_channels"
    ADULT_PORNOGRAPHY_ON_WORK_EQUIPMENT = "adult_pornography_on_work_equipment"
    INAPPROPRIATE_ACCESS_ACCIDENTAL = "inappropriate_access_accidental"
    INAPPROPRIATE_ACCESS_DELIBERATE = "inappropriate_access_deliberate"
    CYBERBULLYING = "cyberbullying"
    OFFENSIVE_EMAIL = "offensive_email"
    DEROGATORY_POST = "derogatory_post"
    SEXUAL_HARASSMENT_ONLINE = "sexual_harassment_online"
    SECURITY_BREACH = "security_breach"
    LOST_OR_STOLEN_EQUIPMENT = "lost_or_stolen_equipment"
    PERSONAL_DATA_LOST = "personal_data_lost"
    VIRUS = "virus"
    COMPROMISED_ACCOUNT = "compromised_account"
    OTHER = "other"


class RiskArea(StrEnum):
    """KCSIE's four areas of online risk (seed 004)."""

    CONTENT = "content"
    CONTACT = "contact"
    CONDUCT = "conduct"
    COMMERCE = "commerce"


class SubjectKind(StrEnum):
    PUPIL = "pupil"
    STAFF = "staff"
    VISITOR = "visitor"
    PARENT = "parent"
    UNKNOWN = "unknown"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)


class Reporter(_Strict):
    role: str = Field(min_length=1, max_length=80, examples=["class teacher"])
    name: str | None = Field(default=None, max_length=120, description="Optional; a member of staff.")


class Subject(_Strict):
    """Who the incident is about. Pupils are named by the school's own identifier; names are optional."""

    kind: SubjectKind
    identifier: str | None = Field(
        default=None, max_length=64, description="The school's own identifier (e.g. UPN or MIS id)."
    )
    name: str | None = Field(default=None, max_length=120, description="Pupil-identifying; never logged.")
    date_of_birth: datetime | None = Field(default=None, description="Pupil-identifying; never logged.")
    age: int | None = Field(default=None, ge=0, le=120)
    year_group: str | None = Field(default=None, max_length=20, examples=["Year 6"])
    staff_role: str | None = Field(
        default=None, max_length=80, description="For staff subjects, e.g. 'headteacher', 'teacher'."
    )
    special_educational_needs: bool | None = None


class Evidence(_Strict):
    """Where the evidence is. The system never takes the imagery itself (seeds 000, 001)."""

    device: str = Field(min_length=1, max_length=200, examples=["school laptop asset 4471"])
    location: str = Field(min_length=1, max_length=200, examples=["headteacher's locked cupboard"])
    secured_by: str | None = Field(default=None, max_length=120, examples=["IT technician"])
    secured_at: AwareDatetime | None = None
    isolated_from_network: bool = False


class IncidentReport(_Strict):
    """An incident report as a CPOMS-style integration posts it."""

    school_id: str = Field(min_length=1, max_length=64, examples=["school-a"])
    reporter: Reporter
    occurred_at: AwareDatetime
    where: str = Field(min_length=1, max_length=200, examples=["ICT suite"])
    category: Category
    risk_area: RiskArea
    subjects: list[Subject] = Field(min_length=1, max_length=50)
    description: str = Field(min_length=1, max_length=8000)
    child_at_immediate_risk: bool = False
    evidence: Evidence | None = None


# Paths (within a report) of fields that identify a pupil. Governors and logs never see them.
PUPIL_IDENTIFYING_SUBJECT_FIELDS = ("identifier", "name", "date_of_birth")
SENSITIVE_KEYS = frozenset({"name", "date_of_birth", "dob", "identifier", "description", "pupil_name"})
# Free text is scrubbed whole; its single words ("school", "stolen") would otherwise be scrubbed from every field.
FREE_TEXT_KEYS = frozenset({"description"})


def without_pupil_identifiers(report: dict[str, Any]) -> dict[str, Any]:
    """A copy of a report (as a dict) with pupil-identifying fields and the free text removed."""
    clean = dict(report)
    clean.pop("description", None)
    subjects = []
    for subject in clean.get("subjects", []):
        s = dict(subject)
        if s.get("kind") == SubjectKind.PUPIL:
            for f in PUPIL_IDENTIFYING_SUBJECT_FIELDS:
                s.pop(f, None)
        else:
            s.pop("name", None)
            s.pop("date_of_birth", None)
        subjects.append(s)
    clean["subjects"] = subjects
    return clean


# What every reader of an incident may see of a recorded action (`incidents.actions`): the free text (the reason
# parents were not informed, the outcome on closing) can name a child, as a report's description can, and a crime
# reference opens the case. Only the people who need pupil details (the DSL, deputy, headteacher) see the rest.
ACTION_FIELDS_FOR_EVERY_READER = frozenset({
    "action_id", "incident_id", "action", "by", "at", "agency", "isolated_from_network", "reminder",
})


def action_for_every_reader(action: dict[str, Any]) -> dict[str, Any]:
    """A copy of an action (or of its details) with only what every reader may see."""
    return {k: v for k, v in action.items() if k in ACTION_FIELDS_FOR_EVERY_READER}


def sensitive_values(data: Any) -> set[str]:
    """Every string value under a sensitive key anywhere in `data`: what log redaction must scrub."""
    found: set[str] = set()

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            for k, v in node.items():
                if k in SENSITIVE_KEYS and isinstance(v, str) and len(v) >= 2:
                    found.add(v)
                    if k not in FREE_TEXT_KEYS:  # a name's parts are sensitive on their own
                        found.update(part for part in v.split() if len(part) >= 3)
                else:
                    walk(v)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(data)
    return found
