"""The data carried by each event type: the contract between services (DESIGN.md, event contract)."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from common.incident import IncidentReport, RiskArea


class _Contract(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class IncidentClass(StrEnum):
    ILLEGAL = "illegal"
    YOUTH_PRODUCED_SEXUAL_IMAGERY = "youth_produced_sexual_imagery"
    ALLEGATION_ABOUT_STAFF = "allegation_about_staff"
    INAPPROPRIATE = "inappropriate"
    SECURITY = "security"


class Urgency(StrEnum):
    IMMEDIATE = "immediate"
    HIGH = "high"
    NORMAL = "normal"
    LOW = "low"


class NoticePurpose(StrEnum):
    """Why a person is told: a level of the chain (first notice, escalation, repeat), which an acknowledgement
    makes moot; or an overdue reminder's owner, told whether or not the incident was acknowledged."""

    ESCALATION = "escalation"
    REMINDER = "reminder"


class ChannelKind(StrEnum):
    EMAIL = "email"
    SMS = "sms"
    WEBHOOK = "webhook"


class IncidentReported(_Contract):
    incident_id: str
    reference: str = Field(description="Short human reference, e.g. 'OSI-7K2QF'; carries no personal data.")
    integration_id: str
    report: IncidentReport


class Reason(_Contract):
    rule: str = Field(description="Id of the rule that fired, e.g. 'category.csam' or 'text.adult-meet'.")
    explanation: str


class Reminder(_Contract):
    code: str = Field(examples=["refer_lado", "do_not_view_copy_share_delete"])
    text: str
    owner_role: str
    due_at: datetime | None = None


class IncidentTriaged(_Contract):
    incident_id: str
    reference: str
    incident_class: IncidentClass
    urgency: Urgency
    risk_area: RiskArea
    reasons: list[Reason]
    reminders: list[Reminder]
    policy_version: str = Field(description="Content hash of the policy file that decided this.")
    chain: list[dict[str, Any]] = Field(description="The escalation levels frozen onto the incident.")


class ChannelAddress(_Contract):
    kind: ChannelKind
    address: str


class Recipient(_Contract):
    role: str
    name: str | None = None
    channels: list[ChannelAddress] = Field(min_length=1, description="In order of preference.")


class NotificationRequested(_Contract):
    notification_id: str
    incident_id: str
    reference: str
    school_id: str
    school_name: str
    incident_class: IncidentClass
    urgency: Urgency
    level: int
    generation: int = Field(description="Fencing token: the incident's escalation generation.")
    recipient: Recipient
    reminders: list[Reminder]
    reason: str = Field(description="Why this person is told now: first notice, escalation, overdue.")
    purpose: NoticePurpose | None = Field(
        default=None,
        description="escalation: the chain is told, and an acknowledgement by someone it told withholds what has "
        "not gone out, however late it was requested (triage may not have read the acknowledgement yet); reminder: "
        "an overdue reminder's owner, told regardless. Absent from requests made before it was added (notify then "
        "withholds only what was requested before the acknowledgement). Consumers are upgraded before triage.",
    )


class NotificationDelivered(_Contract):
    notification_id: str
    incident_id: str
    recipient_role: str
    channel: ChannelKind
    provider_id: str
    attempts: int


class NotificationFailed(_Contract):
    notification_id: str
    incident_id: str
    recipient_role: str
    level: int
    generation: int
    errors: list[str]


class NotificationWithheld(_Contract):
    """A notice not sent because its incident was acknowledged before it could go out (illegal-class notices
    are never withheld). Not a failure: nobody needs waking any more."""

    notification_id: str
    incident_id: str
    recipient_role: str
    level: int
    generation: int
    acknowledged_at: datetime
    reason: str


class Acknowledger(_Contract):
    role: str
    name: str | None = None
    person_id: str | None = None


class IncidentAcknowledged(_Contract):
    incident_id: str
    by: Acknowledger
    at: datetime
    via: str = Field(description="'link' (one-time link from a notification) or 'token' (signed-in person).")
    notification_id: str | None = None


class IncidentEscalated(_Contract):
    incident_id: str
    from_level: int
    to_level: int
    repeat: int
    generation: int
    reason: str


class ActionKind(StrEnum):
    REFERRAL_MADE = "referral_made"
    DEVICE_SECURED = "device_secured"
    PARENTS_INFORMED = "parents_informed"
    PARENTS_NOT_INFORMED = "parents_not_informed"
    ICO_NOTIFIED = "ico_notified"
    REMINDER_DONE = "reminder_done"  # any other reminder with a due time, named by its code (common.reminders)
    INCIDENT_CLOSED = "incident_closed"


class Agency(StrEnum):
    POLICE = "police"
    CEOP = "ceop"
    IWF = "iwf"
    LADO = "lado"
    CHILDRENS_SOCIAL_CARE = "childrens_social_care"
    PREVENT = "prevent"
    REPORT_REMOVE = "report_remove"
    FILTERING_PROVIDER = "filtering_provider"
    DATA_PROTECTION_OFFICER = "data_protection_officer"


class IncidentActionRecorded(_Contract):
    action_id: str
    incident_id: str
    action: ActionKind
    by: Acknowledger
    at: datetime
    agency: Agency | None = None
    reference_number: str | None = None
    isolated_from_network: bool | None = None
    reason: str | None = None
    outcome: str | None = None
    reminder: str | None = Field(default=None, description="reminder_done: the code of the reminder done.")
