"""Each school's escalation policy: contacts, chains, reminders and working hours, from a YAML file people edit."""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from common.contracts import ChannelKind, IncidentClass
from triage.rules import CODE_PATTERN, Rulebook, default_rulebook
from triage.working_hours import WorkingHours
from triage.yamlsource import InvalidYamlFile, Location, Problem, read_yaml, validate

DEFAULT_POLICY_FILE = Path(__file__).parent / "policies" / "default.yaml"

ROLES: tuple[str, ...] = (
    "headteacher",
    "deputy_headteacher",
    "dsl",
    "deputy_dsl",
    "chair_of_governors",
    "safeguarding_governor",
    "online_safety_coordinator",
    "computing_leader",
    "it_technician",
    "it_support_provider",
    "data_protection_officer",
    "business_manager",
)


class PolicyError(InvalidYamlFile):
    """A policy file that cannot be used; the message names the file, line, path and problem."""


def _known_role(value: str) -> str:
    if value not in ROLES:
        raise ValueError(f"unknown role {value!r}; the roles are: {', '.join(ROLES)}")
    return value


RoleName = Annotated[str, AfterValidator(_known_role)]
ReminderCode = Annotated[str, Field(pattern=CODE_PATTERN)]
_ADDRESS_SHAPES = {
    ChannelKind.EMAIL: (r"[^@\s]+@[^@\s]+\.[^@\s]+", "an email address such as dsl@school.example"),
    ChannelKind.SMS: (r"\+[1-9]\d{6,14}", "a phone number in international form such as +447700900123"),
    ChannelKind.WEBHOOK: (r"https://\S+", "an https:// URL"),
}


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Channel(_Frozen):
    kind: ChannelKind
    address: str = Field(min_length=1)

    @model_validator(mode="after")
    def _address_fits_kind(self) -> Channel:
        shape, example = _ADDRESS_SHAPES[self.kind]
        if not re.fullmatch(shape, self.address):
            raise ValueError(f"a {self.kind.value} address must be {example}, not {self.address!r}")
        return self


class Contact(_Frozen):
    name: str | None = None
    channels: tuple[Channel, ...] = Field(min_length=1, description="In order of preference.")


class ChainLevel(_Frozen):
    roles: tuple[RoleName, ...] = Field(min_length=1, description="Told in parallel.")
    ack_timeout_minutes: int = Field(gt=0, le=7 * 24 * 60)

    @property
    def ack_timeout(self) -> timedelta:
        return timedelta(minutes=self.ack_timeout_minutes)


class Chain(_Frozen):
    levels: tuple[ChainLevel, ...] = Field(min_length=1)
    repeat_every_minutes: int = Field(gt=0, le=7 * 24 * 60, description="Re-notify the top level.")
    max_repeats: int | None = Field(default=None, ge=0, description="None: until acknowledged.")


class SpecialChain(Chain):
    when: ReminderCode = Field(description="A circumstance the rules raise, e.g. 'virus'.")


class Chains(_Frozen):
    illegal: Chain
    youth_produced_sexual_imagery: Chain
    allegation_about_staff: Chain
    inappropriate: Chain
    security: Chain


class SpecialChains(_Frozen):
    """Chains used instead of the class's chain in a circumstance; the first that applies wins."""

    illegal: tuple[SpecialChain, ...] = ()
    youth_produced_sexual_imagery: tuple[SpecialChain, ...] = ()
    allegation_about_staff: tuple[SpecialChain, ...] = ()
    inappropriate: tuple[SpecialChain, ...] = ()
    security: tuple[SpecialChain, ...] = ()


class DueOffset(_Frozen):
    """When a reminder falls due after triage: exactly one of these."""

    at_once: bool = False
    hours: int | None = Field(default=None, gt=0)
    working_days: int | None = Field(default=None, gt=0)

    @model_validator(mode="after")
    def _exactly_one(self) -> DueOffset:
        given = [self.at_once, self.hours is not None, self.working_days is not None]
        if given.count(True) != 1:
            raise ValueError("give exactly one of 'at_once: true', 'hours' or 'working_days'")
        return self

    def due_at(self, now: datetime, hours: WorkingHours) -> datetime:
        if self.hours is not None:
            return now + timedelta(hours=self.hours)
        if self.working_days is not None:
            return hours.after_working_days(now, self.working_days)
        return now


class ReminderPolicy(_Frozen):
    text: str = Field(min_length=1)
    owner: RoleName
    due: DueOffset | None = None
    supersedes: tuple[ReminderCode, ...] = Field(
        default=(), description="Reminders this one makes redundant when both are raised (the same referral, sooner)."
    )


class ClassReminders(_Frozen):
    illegal: tuple[ReminderCode, ...] = ()
    youth_produced_sexual_imagery: tuple[ReminderCode, ...] = ()
    allegation_about_staff: tuple[ReminderCode, ...] = ()
    inappropriate: tuple[ReminderCode, ...] = ()
    security: tuple[ReminderCode, ...] = ()


class SchoolPolicy(_Frozen):
    school_id: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,63}$")
    school_name: str = Field(min_length=1)
    working_hours: WorkingHours = WorkingHours()
    contacts: dict[RoleName, Contact]
    stand_ins: dict[RoleName, RoleName] = Field(
        default_factory=dict, description="When the person in a role is the subject, who acts instead."
    )
    chains: Chains
    special_chains: SpecialChains = SpecialChains()
    reminders: dict[ReminderCode, ReminderPolicy]
    class_reminders: ClassReminders
    version: str = Field(default="", description="sha256 of the file's bytes, set when loaded.")

    def chain_for(self, incident_class: IncidentClass, circumstances: tuple[str, ...]) -> Chain:
        for special in getattr(self.special_chains, incident_class.value):
            if special.when in circumstances:
                return special  # type: ignore[no-any-return]
        return getattr(self.chains, incident_class.value)  # type: ignore[no-any-return]

    def reminder_codes_for(self, incident_class: IncidentClass) -> tuple[str, ...]:
        return getattr(self.class_reminders, incident_class.value)  # type: ignore[no-any-return]


@dataclass(frozen=True)
class PolicyBook:
    """Every school's policy, with the default for a school that has none."""

    default: SchoolPolicy
    schools: Mapping[str, SchoolPolicy]

    def for_school(self, school_id: str) -> SchoolPolicy:
        return self.schools.get(school_id, self.default)


def load_policy(file: Path, rulebook: Rulebook | None = None) -> SchoolPolicy:
    """Load and check one policy file; raises `PolicyError` naming the file, line, path and problem."""
    source = read_yaml(file, PolicyError)
    policy = validate(source, SchoolPolicy, PolicyError)
    problems = [source.problem(loc, message) for loc, message in _cross_check(policy, rulebook)]
    if problems:
        raise PolicyError(file, problems)
    return policy.model_copy(update={"version": source.content_hash})


def load_policies(
    directory: Path | None, default_file: Path = DEFAULT_POLICY_FILE, rulebook: Rulebook | None = None
) -> PolicyBook:
    """The default policy plus one policy per `*.yaml` file in `directory` (one file per school)."""
    default = load_policy(default_file, rulebook)
    schools: dict[str, SchoolPolicy] = {}
    files = sorted([*directory.glob("*.yaml"), *directory.glob("*.yml")]) if directory else []
    for file in files:
        if file.resolve() == default_file.resolve():
            continue
        policy = load_policy(file, rulebook)
        if policy.school_id in schools:
            line = read_yaml(file, PolicyError).line_of(("school_id",))
            message = f"school '{policy.school_id}' already has a policy in another file"
            raise PolicyError(file, [Problem(line, "school_id", message)])
        schools[policy.school_id] = policy
    return PolicyBook(default=default, schools=schools)


def default_policy() -> SchoolPolicy:
    return load_policy(DEFAULT_POLICY_FILE)


def _cross_check(policy: SchoolPolicy, rulebook: Rulebook | None) -> Iterator[tuple[Location, str]]:
    """What pydantic cannot see alone: every role reached has a contact, every code a definition."""
    book = rulebook if rulebook is not None else default_rulebook()
    yield from _chain_problems(policy, book.circumstances())
    for incident_class in IncidentClass:
        for index, code in enumerate(policy.reminder_codes_for(incident_class)):
            if code not in policy.reminders:
                loc = ("class_reminders", incident_class.value, index)
                yield loc, f"unknown reminder {code!r}: define it under 'reminders'"
    for code, reminder in policy.reminders.items():
        for index, superseded in enumerate(reminder.supersedes):
            if superseded not in policy.reminders:
                yield ("reminders", code, "supersedes", index), f"unknown reminder {superseded!r}"
        if reminder.owner not in policy.contacts:
            yield ("reminders", code, "owner"), f"no contact for role {reminder.owner!r}"
    for role, stand_in in policy.stand_ins.items():
        if stand_in not in policy.contacts:
            yield ("stand_ins", role), f"no contact for role {stand_in!r}"
    for code, rule_id in book.reminder_codes().items():
        if code not in policy.reminders:
            yield ("reminders",), f"no reminder {code!r}, which rule {rule_id!r} can raise: define it"


def _chain_problems(policy: SchoolPolicy, circumstances: frozenset[str]) -> Iterator[tuple[Location, str]]:
    for incident_class in IncidentClass:
        name = incident_class.value
        chains: list[tuple[Location, Chain]] = [(("chains", name), getattr(policy.chains, name))]
        for index, special in enumerate(getattr(policy.special_chains, name)):
            chains.append((("special_chains", name, index), special))
            if special.when not in circumstances:
                known = ", ".join(sorted(circumstances))
                yield (
                    ("special_chains", name, index, "when"),
                    f"unknown circumstance {special.when!r}; the rules raise: {known}",
                )
        for loc, chain in chains:
            for level_index, level in enumerate(chain.levels):
                for role_index, role in enumerate(level.roles):
                    if role not in policy.contacts:
                        role_loc = (*loc, "levels", level_index, "roles", role_index)
                        yield role_loc, f"no contact for role {role!r}"


__all__ = [
    "DEFAULT_POLICY_FILE",
    "ROLES",
    "Chain",
    "ChainLevel",
    "Channel",
    "Contact",
    "DueOffset",
    "PolicyBook",
    "PolicyError",
    "ReminderPolicy",
    "SchoolPolicy",
    "SpecialChain",
    "WorkingHours",
    "load_policies",
    "load_policy",
]
