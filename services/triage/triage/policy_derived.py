"""What triage derives from one school policy (one version of its file) once, not once per report: the frozen
chains with their contacts, reasons and stored forms, the recipients by role and the reminders of each class.

A policy is immutable once loaded (a new version of the file is a new `SchoolPolicy`), so everything here is a
pure function of it; the cache is keyed by the policy object itself and checked by identity.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from common.contracts import ChannelAddress, IncidentClass, Reason, Recipient
from triage.chain import EscalationLevel, FrozenChain
from triage.policy import Chain, DueOffset, SchoolPolicy

_NO_STAND_IN = "Everyone in the chain is a subject and the policy names no stand-in; the chain is told as written."
_CACHED_POLICIES = 64  # policies whose derivations are kept (a service holds one per school)


@dataclass(frozen=True)
class ChosenChain:
    """A chain as frozen onto incidents, with the reasons for it and the forms it is stored and sent in."""

    chain: FrozenChain
    reasons: tuple[Reason, ...]
    stored_json: str  # the incidents row's `chain`
    contract: tuple[dict[str, Any], ...]  # `IncidentTriaged.chain`, one dict per level


@dataclass(frozen=True)
class ReminderTemplate:
    """A reminder of the policy as it is given to an incident, except its due time (which depends on when)."""

    code: str
    text: str
    owner_role: str
    due: DueOffset | None


class PolicyDerived:
    """The derivations of one policy, each computed the first time it is needed."""

    def __init__(self, policy: SchoolPolicy) -> None:
        self.policy = policy
        self._chains: dict[tuple[int, tuple[str, ...]], ChosenChain] = {}
        self._recipients: dict[str, Recipient] = {}
        self._owners: dict[str, str | None] = {}
        self._reminders: dict[tuple[IncidentClass, tuple[str, ...], tuple[str, ...]], tuple[ReminderTemplate, ...]] = {}
        self._at: datetime | None = None
        self._memo: dict[Hashable, object] = {}

    def memo_at(self, now: datetime) -> dict[Hashable, object]:
        """A memo for what is worked out at the instant `now` (the very object: a batch of reports shares one);
        emptied when another instant is asked for, so it holds one batch's worth at most."""
        if now is not self._at:
            self._at, self._memo = now, {}
        return self._memo

    def chosen(self, incident_class: IncidentClass, circumstances: tuple[str, ...],
               standing_aside: tuple[str, ...]) -> ChosenChain:
        chain = self.policy.chain_for(incident_class, circumstances)
        key = (id(chain), standing_aside)
        found = self._chains.get(key)
        if found is None:
            found = self._chains[key] = self._choose(chain, standing_aside)
        return found

    def recipient(self, role: str) -> Recipient:
        """The person in `role`, with their channels (the policy must have a contact for it)."""
        found = self._recipients.get(role)
        if found is None:
            contact = self.policy.contacts[role]
            channels = [ChannelAddress(kind=c.kind, address=c.address) for c in contact.channels]
            found = self._recipients[role] = Recipient(role=role, name=contact.name, channels=channels)
        return found

    def owner_json(self, role: str) -> str | None:
        """A reminder owner's `Recipient` as stored on the reminder row; None when the policy has no contact."""
        if role not in self._owners:
            self._owners[role] = self.recipient(role).model_dump_json() if role in self.policy.contacts else None
        return self._owners[role]

    def reminders(self, incident_class: IncidentClass, codes: tuple[str, ...],
                  standing_aside: tuple[str, ...]) -> tuple[ReminderTemplate, ...]:
        """The class's reminders then the rules' (each once, less those another of them supersedes), owned by
        whoever acts for a role standing aside."""
        key = (incident_class, codes, standing_aside)
        found = self._reminders.get(key)
        if found is None:
            policy = self.policy
            templates = []
            raised = dict.fromkeys([*policy.reminder_codes_for(incident_class), *codes])
            superseded = {s for code in raised for s in policy.reminders[code].supersedes}
            for code in (c for c in raised if c not in superseded):
                definition = policy.reminders[code]
                owner = acting_role(definition.owner, standing_aside, policy) or definition.owner
                templates.append(ReminderTemplate(code, definition.text, owner, definition.due))
            found = self._reminders[key] = tuple(templates)
        return found

    def _choose(self, chain: Chain, standing_aside: tuple[str, ...]) -> ChosenChain:
        when = getattr(chain, "when", None)
        reasons: list[Reason] = []
        if when is not None:
            explanation = f"The school's policy has its own chain for this circumstance ({when.replace('_', ' ')})."
            reasons.append(Reason(rule=f"policy.special-chain.{when}", explanation=explanation))
        frozen, stand_in_reasons = self._freeze(chain, standing_aside)
        return ChosenChain(
            chain=frozen,
            reasons=(*reasons, *stand_in_reasons),
            stored_json=frozen.model_dump_json(),
            contract=tuple(frozen.as_contract()),
        )

    def _freeze(self, chain: Chain, standing_aside: tuple[str, ...]) -> tuple[FrozenChain, list[Reason]]:
        """Copy the chain with its contacts; a role standing aside gives way to its stand-in; nobody twice."""
        policy = self.policy
        reasons = [
            Reason(
                rule=f"policy.stand-in.{role}",
                explanation=f"The {role.replace('_', ' ')} is the subject, so is not told; "
                f"{(acting_role(role, standing_aside, policy) or 'nobody').replace('_', ' ')} acts instead.",
            )
            for role in standing_aside
        ]
        levels: list[EscalationLevel] = []
        told: set[str] = set()
        for level in chain.levels:
            roles = [acting_role(role, standing_aside, policy) for role in level.roles]
            fresh = [r for r in dict.fromkeys(roles) if r is not None and r not in told]
            told.update(fresh)
            if fresh:
                recipients = tuple(self.recipient(role) for role in fresh)
                levels.append(EscalationLevel(level=len(levels), recipients=recipients, ack_timeout=level.ack_timeout))
        if not levels:  # Nobody left: better to tell the chain as written than to tell nobody.
            return self._freeze(chain, ())[0], [Reason(rule="policy.no-stand-in", explanation=_NO_STAND_IN)]
        frozen = FrozenChain(
            levels=tuple(levels),
            repeat_every=timedelta(minutes=chain.repeat_every_minutes),
            max_repeats=chain.max_repeats,
            policy_version=policy.version,
        )
        return frozen, reasons


def acting_role(role: str, standing_aside: tuple[str, ...], policy: SchoolPolicy) -> str | None:
    """Who acts for `role`: itself, or (when it stands aside) its stand-in, followed; None if nobody."""
    seen: set[str] = set()
    while role in standing_aside:
        if role in seen or role not in policy.stand_ins:
            return None
        seen.add(role)
        role = policy.stand_ins[role]
    return role


_derived: OrderedDict[int, PolicyDerived] = OrderedDict()


def derived_from(policy: SchoolPolicy) -> PolicyDerived:
    """The derivations of `policy`, kept for the most recently used policies."""
    key = id(policy)
    found = _derived.get(key)
    if found is not None and found.policy is policy:
        _derived.move_to_end(key)
        return found
    found = _derived[key] = PolicyDerived(policy)
    while len(_derived) > _CACHED_POLICIES:
        _derived.popitem(last=False)
    return found
