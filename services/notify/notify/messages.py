"""Turns notification requests into the words a DSL or headteacher reads: subject, SMS, email and webhook.

What a message may say is fixed by seed 003 ("Email subject lines should not contain the full name, or
DOB, of any child"): the school, the incident reference, the class and urgency, the acknowledgement link
and the reminders. Never a pupil's name, date of birth or the report's description, and never evidence.
The request contract carries none of those; `forbidden` lets a caller that knows them prove it.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from zoneinfo import ZoneInfo

from common.contracts import IncidentClass, NotificationRequested, Reminder, Urgency
from notify import sms
from notify.channels.base import OutgoingMessage, message_id_for

WEBHOOK_TYPE = "uk.school.safety.notification.v1"
ACK_PATH = "/ack/{token}"  # the web app serves the one-button page here (intake too); only its POST acknowledges
UK = ZoneInfo("Europe/London")

CLASS_LABELS = {
    IncidentClass.ILLEGAL: "illegal content",
    IncidentClass.YOUTH_PRODUCED_SEXUAL_IMAGERY: "youth-produced sexual imagery",
    IncidentClass.ALLEGATION_ABOUT_STAFF: "allegation about staff",
    IncidentClass.INAPPROPRIATE: "inappropriate content or conduct",
    IncidentClass.SECURITY: "security incident",
}
URGENCY_LABELS = {
    Urgency.IMMEDIATE: "IMMEDIATE ACTION",
    Urgency.HIGH: "URGENT",
    Urgency.NORMAL: "Action needed",
    Urgency.LOW: "For attention",
}
URGENCY_ORDER = {Urgency.IMMEDIATE: 0, Urgency.HIGH: 1, Urgency.NORMAL: 2, Urgency.LOW: 3}
_MIN_TERM = 3  # shorter terms would match ordinary words and block every alert


class ForbiddenContent(ValueError):
    """A rendered message contains a term it must never carry. Says where, never what."""


@dataclass(frozen=True)
class Links:
    acknowledge: str
    incident: str | None = None


def ack_url(base_url: str, token: str) -> str:
    return base_url.rstrip("/") + ACK_PATH.format(token=token)


def forbidden_terms(
    *, names: Iterable[str] = (), dates_of_birth: Iterable[date] = (), other: Iterable[str] = ()
) -> frozenset[str]:
    """The strings a message must not contain: names as given, each DOB in the ways people write dates."""
    terms = {*names, *other}
    for d in dates_of_birth:
        terms |= {
            d.isoformat(), f"{d:%d/%m/%Y}", f"{d.day}/{d.month}/{d.year}", f"{d:%d/%m/%y}",
            f"{d:%d.%m.%Y}", f"{d:%d-%m-%Y}", f"{d.day} {d:%B} {d.year}", f"{d.day} {d:%b} {d.year}",
        }  # fmt: skip
    return frozenset(t for t in terms if t)


def render(request: NotificationRequested, links: Links, *, forbidden: Iterable[str] = ()) -> OutgoingMessage:
    return render_digest([(request, links)], forbidden=forbidden)


def render_digest(
    items: Sequence[tuple[NotificationRequested, Links]], *, forbidden: Iterable[str] = ()
) -> OutgoingMessage:
    """One message for one or more requests to the same address, most urgent first."""
    if not items:
        raise ValueError("nothing to render")
    ordered = sorted(items, key=lambda item: URGENCY_ORDER[item[0].urgency])
    message = OutgoingMessage(
        message_id=message_id_for([r.notification_id for r, _ in ordered]),
        notification_ids=tuple(r.notification_id for r, _ in ordered),
        subject=_subject(ordered),
        render_email_body=functools.partial(_email_body, ordered),
        render_sms_text=functools.partial(_sms, ordered),
        render_webhook_payload=functools.partial(_webhook, ordered),
    )
    _refuse_forbidden(message, forbidden)
    return message


def _one_line(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()


def _headline(request: NotificationRequested) -> str:
    label = CLASS_LABELS[request.incident_class]
    return f"{URGENCY_LABELS[request.urgency]}: {label}, incident {request.reference}"


def _schools(ordered: Sequence[tuple[NotificationRequested, Links]]) -> str:
    names = sorted({_one_line(r.school_name) for r, _ in ordered})
    return names[0] if len(names) == 1 else f"{len(names)} schools"


def _subject(ordered: Sequence[tuple[NotificationRequested, Links]]) -> str:
    first = ordered[0][0]
    if len(ordered) == 1:
        subject = f"{_headline(first)} at {_one_line(first.school_name)}"
    else:
        subject = f"{URGENCY_LABELS[first.urgency]}: {len(ordered)} online-safety incidents at {_schools(ordered)}"
    return subject[:250]


def _when(moment: datetime) -> str:
    local = moment.astimezone(UK)
    return f"{local:%H:%M} on {local:%a} {local.day} {local:%b %Y} (UK time)"


def _reminder_line(reminder: Reminder) -> str:
    due = f"; by {_when(reminder.due_at)}" if reminder.due_at else ""
    return f"  - {_one_line(reminder.text)} (for the {reminder.owner_role.replace('_', ' ')}{due})"


def _email_section(request: NotificationRequested, links: Links) -> list[str]:
    lines = [
        f"Incident {request.reference} at {_one_line(request.school_name)}",
        f"Class: {CLASS_LABELS[request.incident_class]}",
        f"Urgency: {request.urgency.value}",
        f"Escalation level: {request.level}",
        f"Why you are told now: {_one_line(request.reason)}",
        "",
        "Acknowledge that you have taken this on (the link opens a page with one button; opening it",
        "alone acknowledges nothing):",
        links.acknowledge,
    ]
    if links.incident:
        lines += ["", "The incident record:", links.incident]
    if request.reminders:
        lines += ["", "What to do now:", *(_reminder_line(r) for r in request.reminders)]
    return lines


def _email_body(ordered: Sequence[tuple[NotificationRequested, Links]]) -> str:
    lines: list[str] = []
    if len(ordered) > 1:
        lines += [f"{len(ordered)} online-safety incidents need you. Each has its own acknowledgement link.", ""]
    for i, (request, links) in enumerate(ordered):
        if i:
            lines += ["", "-" * 60, ""]
        lines += _email_section(request, links)
    lines += [
        "",
        "This message deliberately holds no pupil's name, no date of birth and no evidence.",
        "Do not forward it. Do not view, copy, share or delete any imagery involved.",
    ]
    return "\n".join(lines) + "\n"


def _sms(ordered: Sequence[tuple[NotificationRequested, Links]]) -> str:
    return _sms_single(*ordered[0]) if len(ordered) == 1 else _sms_digest(ordered)


def _more(count: int, noun: str, where: str = "") -> str:
    return f"\n(+{count} more {noun}{'' if count == 1 else 's'}{where})" if count else ""


def _sms_single(request: NotificationRequested, links: Links) -> str:
    school = sms.truncate(sms.to_gsm(_one_line(request.school_name)), 60)
    text = sms.to_gsm(f"{_headline(request)} at {school}.\nAcknowledge: ") + links.acknowledge
    if sms.length(text) > sms.MAX_LENGTH:
        raise ValueError("acknowledgement link is too long for an SMS")
    lines = ["\n" + sms.to_gsm(_one_line(r.text)) for r in request.reminders]
    used = 0
    for line in lines:
        if sms.length(text + line + _more(len(lines) - used - 1, "step")) > sms.MAX_LENGTH:
            break
        text += line
        used += 1
    if used == 0 and lines:  # the first reminder matters most: part of it rather than none
        room = sms.MAX_LENGTH - sms.length(text + _more(len(lines) - 1, "step"))
        if room > 20:
            text += sms.truncate(lines[0], room)
            used = 1
    return text + _more(len(lines) - used, "step")


_ELSEWHERE = ", each with its link in your email"


def _sms_digest(ordered: Sequence[tuple[NotificationRequested, Links]]) -> str:
    """Routine notices to one phone within a window, as one SMS (`throttle`): three fragments hold about two
    one-time links, so the most urgent incidents' links go first and the SMS says how many more there are."""
    school = sms.truncate(sms.to_gsm(_schools(ordered)), 60)
    first = ordered[0][0]
    text = sms.to_gsm(f"{URGENCY_LABELS[first.urgency]}: {len(ordered)} online-safety incidents at {school}.")
    for n, (request, links) in enumerate(ordered):
        line = "\n" + sms.to_gsm(f"{request.reference} ({CLASS_LABELS[request.incident_class]}): ")
        line += links.acknowledge
        if sms.length(text + line + _more(len(ordered) - n - 1, "incident", _ELSEWHERE)) > sms.MAX_LENGTH:
            return text + _more(len(ordered) - n, "incident", _ELSEWHERE)
        text += line
    return text


def _webhook(ordered: Sequence[tuple[NotificationRequested, Links]]) -> dict[str, object]:
    return {
        "type": WEBHOOK_TYPE,
        "id": message_id_for([r.notification_id for r, _ in ordered]),
        "notifications": [_webhook_item(request, links) for request, links in ordered],
    }


def _webhook_item(request: NotificationRequested, links: Links) -> dict[str, object]:
    return {
        "notification_id": request.notification_id,
        "incident_id": request.incident_id,
        "reference": request.reference,
        "school_id": request.school_id,
        "school_name": request.school_name,
        "incident_class": request.incident_class.value,
        "urgency": request.urgency.value,
        "level": request.level,
        "recipient_role": request.recipient.role,
        "reason": request.reason,
        "acknowledge_url": links.acknowledge,
        "incident_url": links.incident,
        "reminders": [r.model_dump(mode="json") for r in request.reminders],
    }


def _normalise(text: str) -> str:
    return _one_line(text).casefold()


def _refuse_forbidden(message: OutgoingMessage, forbidden: Iterable[str]) -> None:
    terms: list[set[str]] = []
    for term in forbidden:
        plain = _normalise(term)
        if len(plain) < _MIN_TERM:
            continue
        folded = _normalise(sms.to_gsm(term))  # the SMS holds the GSM folding of whatever it quotes
        terms.append({plain, folded} if "?" not in folded or "?" in plain else {plain})
    if not terms:  # the delivery loop's case: nothing to look for, so no need to serialise every form
        return
    parts = {
        "subject": message.subject,
        "SMS": message.sms_text,
        "email body": message.email_body,
        "webhook payload": json.dumps(message.webhook_payload, ensure_ascii=False),
    }
    for part, text in parts.items():
        haystack = _normalise(text)
        for i, variants in enumerate(terms):
            if any(v in haystack for v in variants):
                raise ForbiddenContent(f"the {part} would contain forbidden term #{i + 1}; not rendered")
