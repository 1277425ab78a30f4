"""People's roles as the services compare them: 'Deputy DSL', 'deputy dsl' and 'deputy_dsl' are one role."""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from typing import Any


def normalise_role(role: str) -> str:
    """'Deputy DSL' -> 'deputy_dsl': roles compared as the school writes them, case and spacing aside."""
    return "_".join("".join(c if c.isalnum() else " " for c in role.lower()).split())


def chain_roles(levels: Iterable[Mapping[str, Any]]) -> list[str]:
    """Every role an escalation chain (`IncidentTriaged.chain`, one dict per level) tells, normalised and sorted:
    the people who acknowledge the incident and record its actions."""
    return sorted({normalise_role(r["role"]) for level in levels for r in level.get("recipients", ())})


def in_chain(role: str, roles: Collection[str] | None) -> bool:
    """Whether an acknowledgement or action by `role` counts: the chain's (normalised) roles tell it, or, while
    they are not known (`None`: triage has not decided the chain yet), the credentials alone decide."""
    return roles is None or normalise_role(role) in roles
