"""Who may sign in, for which school and in which role: the contacts of the school policies, read through
triage's own policy loader (the same files triage escalates by), so a school keeps one list of its people."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from common.contracts import ChannelKind
from triage.policy import SchoolPolicy, load_policies


class View(StrEnum):
    DESK = "desk"  # the DSL's desk: incidents with pupil details, actions
    REPORT = "report"  # the governors' report: aggregates only


DESK_ROLES = frozenset({"dsl", "deputy_dsl", "headteacher"})
GOVERNOR_ROLES = frozenset({"chair_of_governors", "safeguarding_governor"})
# Audit knows governors as "governor" or "chair_of_governors" (audit.config.read_roles_redacted).
_TOKEN_ROLE = {"safeguarding_governor": "governor"}


@dataclass(frozen=True)
class Member:
    email: str
    name: str
    school_id: str
    school_name: str
    role: str  # as the policy names it

    @property
    def view(self) -> View:
        return View.DESK if self.role in DESK_ROLES else View.REPORT

    @property
    def token_role(self) -> str:
        return token_role(self.role)


def token_role(role: str) -> str:
    """The role a person token carries to intake and audit for a policy role."""
    return _TOKEN_ROLE.get(role, role)


def view_of(role: str) -> View | None:
    if role in DESK_ROLES:
        return View.DESK
    if role in GOVERNOR_ROLES:
        return View.REPORT
    return None


class Directory:
    """Members by email address (case-insensitive), and school names by id."""

    def __init__(self, policies: Iterable[SchoolPolicy]) -> None:
        self._members: dict[str, Member] = {}
        self.school_names: dict[str, str] = {}
        clashes: set[str] = set()
        for policy in policies:
            self.school_names[policy.school_id] = policy.school_name
            for role, contact in policy.contacts.items():
                if view_of(role) is None:
                    continue
                for channel in contact.channels:
                    if channel.kind is not ChannelKind.EMAIL:
                        continue
                    email = channel.address.strip().lower()
                    if email in self._members and self._members[email].school_id != policy.school_id:
                        clashes.add(email)  # one address, two schools: which school would it sign in to?
                    self._members[email] = Member(email, contact.name or role, policy.school_id,
                                                  policy.school_name, role)
        for email in clashes:
            del self._members[email]

    def find(self, email: str) -> Member | None:
        return self._members.get(email.strip().lower())

    def school_name(self, school_id: str) -> str:
        return self.school_names.get(school_id, school_id)


def load_directory(policy_dir: Path | None) -> Directory:
    """Every school policy in `policy_dir`; with none, the shipped default policy (school id "default")."""
    book = load_policies(policy_dir)
    return Directory(list(book.schools.values()) or [book.default])
