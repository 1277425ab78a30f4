"""The work behind each endpoint: state and outgoing events written in one PostgreSQL transaction."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import asyncpg
import structlog
from pydantic import BaseModel

from common.contracts import Acknowledger, IncidentAcknowledged, IncidentActionRecorded, IncidentReported
from common.events import Clock, CloudEvent, IdFactory, new_event, new_id, utc_now
from common.incident import IncidentReport, action_for_every_reader, sensitive_values, without_pupil_identifiers
from common.logging import sensitive
from common.outbox import enqueue
from common.roles import in_chain
from common.topics import EventType
from intake import store
from intake.auth import AckLink, Integration, Person, Principal
from intake.config import IntakeSettings
from intake.group_commit import ReportWriter
from intake.models import (
    AcknowledgementRequest,
    AcknowledgementView,
    ActingPerson,
    ActionRequest,
    ActionView,
    IncidentAccepted,
    IncidentStatus,
    IncidentView,
    NotificationView,
)
from intake.problems import (
    AckLinkUsed,
    FieldError,
    IdempotencyKeyReused,
    IncidentNotAccessible,
    InvalidInput,
    NotInChain,
    WrongSchool,
)
from intake.reference import ReferenceFactory, new_reference
from intake.store import Claim, NewIncident

log = structlog.get_logger(__name__)

SOURCE = "intake"
EARLIEST_OCCURRENCE = datetime(2000, 1, 1, tzinfo=UTC)
CLOCK_SKEW = timedelta(hours=1)


def request_hash(body: BaseModel, *context: str) -> str:
    """What a retried request must repeat to replay the first answer: its body and where it was sent."""
    return hashlib.sha256("\n".join([*context, body.model_dump_json()]).encode()).hexdigest()


def key_namespace(who: Principal) -> str:
    """Idempotency keys are per integration, or per person (an acknowledgement link cannot act)."""
    if isinstance(who, Integration):
        return who.integration_id
    if isinstance(who, Person):
        return f"person:{who.claims.person_id}"
    raise AssertionError("an acknowledgement link records no actions")


class Intake:
    def __init__(
        self, settings: IntakeSettings, *, clock: Clock = utc_now, ids: IdFactory = new_id,
        references: ReferenceFactory = new_reference,
    ) -> None:
        self._settings = settings
        self._clock = clock
        self._ids = ids
        self._references = references
        self._report_writer: ReportWriter | None = None
        self._report_writer_pool: asyncpg.Pool | None = None

    # -- reports ---------------------------------------------------------------------------------------

    async def report(
        self, pool: asyncpg.Pool, who: Integration, report: IncidentReport, idempotency_key: str | None
    ) -> tuple[IncidentAccepted, bool]:
        """Accept a report durably (with the next group commit); returns the answer and whether it replays an
        earlier one."""
        if report.school_id not in who.schools:
            raise WrongSchool(f"This API key may not report for school {report.school_id!r}.")
        self._check_times(report)
        claim = None if idempotency_key is None else Claim(key_namespace(who), idempotency_key, request_hash(report))
        incident_id = UUID(self._ids())
        received_at = self._clock()
        data = IncidentReported(  # the report is dumped once, here, for the event, the row and log redaction
            incident_id=str(incident_id), reference="", integration_id=who.integration_id, report=report,
        ).model_dump(mode="json")
        with sensitive(sensitive_values(data["report"])):
            written = await self._writer(pool).write(
                lambda reference: self._new_incident(incident_id, who, report, data, reference, received_at), claim
            )
            if written.replayed_answer is not None:
                return IncidentAccepted.model_validate_json(written.replayed_answer), True
            assert written.incident is not None
            accepted = written.incident.accepted
            log.info("incident.received", incident_id=str(incident_id), reference=accepted.reference,
                     school=report.school_id, integration=who.integration_id, category=report.category.value)
        return accepted, False

    def _writer(self, pool: asyncpg.Pool) -> ReportWriter:
        if self._report_writer is None or self._report_writer_pool is not pool:
            self._report_writer = ReportWriter(
                lambda: pool, self._references, self._clock, max_batch=self._settings.write_batch_max,
                max_in_flight=self._settings.write_batches_in_flight,
            )
            self._report_writer_pool = pool
        return self._report_writer

    @property
    def report_writer(self) -> ReportWriter | None:
        """The group commit of reports, once the first report has come (for its counters)."""
        return self._report_writer

    def _new_incident(
        self, incident_id: UUID, who: Integration, report: IncidentReport, data: dict[str, Any], reference: str,
        received_at: datetime,
    ) -> NewIncident:
        event = new_event(
            EventType.INCIDENT_REPORTED, source=SOURCE, subject=str(incident_id), schoolid=report.school_id,
            data={**data, "reference": reference}, clock=self._clock, ids=self._ids,
        )
        return NewIncident(
            id=incident_id, reference=reference, school_id=report.school_id, integration_id=who.integration_id,
            category=report.category.value, risk_area=report.risk_area.value,
            child_at_immediate_risk=report.child_at_immediate_risk, occurred_at=report.occurred_at,
            report_json=json.dumps(data["report"]), received_at=received_at, event=event,
            accepted=IncidentAccepted(incident_id=incident_id, reference=reference,
                                      status_url=f"/v1/incidents/{incident_id}"),
        )

    def _check_times(self, report: IncidentReport) -> None:
        checks: list[tuple[str, datetime | None]] = [("occurred_at", report.occurred_at)]
        if report.evidence is not None:
            checks.append(("evidence.secured_at", report.evidence.secured_at))
        self._check_past(checks)

    def _check_past(self, checks: list[tuple[str, datetime | None]]) -> None:
        """Times of things that happened: from 2000 to now (a far date is a typo, and a year like 0001 with an
        offset cannot even be stored: it answered 503 as if the database were down)."""
        latest = self._clock() + CLOCK_SKEW
        for field, value in checks:
            try:
                ok = value is None or EARLIEST_OCCURRENCE <= value <= latest
            except OverflowError:
                ok = False
            if not ok:
                reason = "must be between 2000-01-01 and now"
                raise InvalidInput(f"{field}: {reason}", errors=[FieldError(field=field, reason=reason)])

    # -- status ----------------------------------------------------------------------------------------

    async def view(self, pool: asyncpg.Pool, who: Principal, incident_id: UUID) -> IncidentView:
        async with pool.acquire() as conn:
            row = await self._visible(conn, who, incident_id)
            acks = await store.acknowledgements(conn, incident_id)
            acts = await store.actions(conn, incident_id)
            notes = await store.notifications(conn, incident_id)
        full = self._may_see_pupils(who)
        report = json.loads(row["report"])
        return IncidentView(
            incident_id=row["id"], reference=row["reference"], school_id=row["school_id"], status=row["status"],
            category=row["category"], risk_area=row["risk_area"],
            child_at_immediate_risk=row["child_at_immediate_risk"], incident_class=row["incident_class"],
            urgency=row["urgency"], escalation_level=row["escalation_level"], received_at=row["received_at"],
            updated_at=row["updated_at"], closed_at=row["closed_at"], pupil_details_included=full,
            report=report if full else without_pupil_identifiers(report),
            acknowledgements=[
                AcknowledgementView(acknowledgement_id=a["id"], role=a["by_role"], name=a["by_name"], via=a["via"],
                                    at=a["at"]) for a in acks
            ],
            actions=[
                ActionView(action_id=a["id"], action=a["action"], role=a["by_role"], name=a["by_name"], at=a["at"],
                           details=_action_details(json.loads(a["details"]), full)) for a in acts
            ],
            notifications=[NotificationView.model_validate(dict(n)) for n in notes],
        )

    def _may_see_pupils(self, who: Principal) -> bool:
        if isinstance(who, Integration):
            return True  # the system that reported it already holds these details
        if isinstance(who, Person):
            return who.role in self._settings.pupil_detail_roles
        return False

    async def _visible(self, conn: Any, who: Principal, incident_id: UUID) -> asyncpg.Record:
        if isinstance(who, Integration):
            row = await store.find_incident(conn, incident_id, schools=sorted(who.schools),
                                            integration_id=who.integration_id)
        elif isinstance(who, Person):
            row = await store.find_incident(conn, incident_id, schools=[who.claims.school_id])
        elif str(incident_id) != who.claims.incident_id:
            row = None  # a link acknowledges only the incident it was sent for
        else:
            row = await store.find_incident(conn, incident_id, schools=[who.claims.school_id])
        if row is None:
            raise IncidentNotAccessible()
        return row

    # -- acknowledgements and actions --------------------------------------------------------------------

    def _acting(self, who: Principal, by: ActingPerson | None) -> tuple[Acknowledger, str]:
        if isinstance(who, Integration):
            if by is None:
                reason = "required when an integration acts for a member of staff"
                raise InvalidInput(f"by: {reason}", errors=[FieldError(field="by", reason=reason)])
            return Acknowledger(role=by.role, name=by.name), "integration"
        name = by.name if by is not None else None
        if isinstance(who, Person):
            return Acknowledger(role=who.claims.role, name=name, person_id=who.claims.person_id), "token"
        return Acknowledger(role=who.claims.recipient_role, name=name), "link"

    async def acknowledge(
        self, pool: asyncpg.Pool, who: Principal, incident_id: UUID, body: AcknowledgementRequest | None
    ) -> AcknowledgementView:
        by, via = self._acting(who, body.by if body else None)
        now = self._clock()
        async with pool.acquire() as conn, conn.transaction():
            row = await self._visible(conn, who, incident_id)
            _may_act(who, row, by)
            if isinstance(who, AckLink):
                spent = await conn.fetchval(
                    "INSERT INTO used_ack_tokens (token_id, incident_id, used_at) VALUES ($1, $2, $3)"
                    " ON CONFLICT DO NOTHING RETURNING 1",
                    who.claims.token_id, incident_id, now,
                )
                if spent is None:
                    raise AckLinkUsed()
            ack = IncidentAcknowledged(
                incident_id=str(incident_id), by=by, at=now, via=via,
                notification_id=who.claims.notification_id if isinstance(who, AckLink) else None,
            )
            event = self._event(EventType.INCIDENT_ACKNOWLEDGED, row, ack.model_dump(mode="json"))
            ack_id = UUID(self._ids())
            await store.insert_acknowledgement(conn, ack_id, event.id, ack)
            await store.advance(conn, incident_id, IncidentStatus.ACKNOWLEDGED, now)
            await enqueue(conn, [event])
        log.info("incident.acknowledged", incident_id=str(incident_id), role=by.role, via=via)
        return AcknowledgementView(acknowledgement_id=ack_id, role=by.role, name=by.name, via=via, at=now)

    async def record_action(
        self, pool: asyncpg.Pool, who: Principal, incident_id: UUID, body: ActionRequest,
        idempotency_key: str | None = None,
    ) -> tuple[ActionView, bool]:
        """Record an action; returns the answer and whether it replays an earlier one (same Idempotency-Key)."""
        missing = body.missing_fields()
        if missing:
            reason = f"required for {body.action.value}"
            raise InvalidInput(f"{', '.join(missing)}: {reason}",
                               errors=[FieldError(field=f, reason=reason) for f in missing])
        self._check_past([("at", body.at)])
        by, _ = self._acting(who, body.by)
        now = self._clock()
        action = IncidentActionRecorded(
            action_id=self._ids(), incident_id=str(incident_id), action=body.action, by=by, at=body.at or now,
            agency=body.agency, reference_number=body.reference_number,
            isolated_from_network=body.isolated_from_network, reason=body.reason, outcome=body.outcome,
            reminder=body.reminder,
        )
        details = action.model_dump(mode="json", exclude_none=True, include=set(store.ACTION_DETAILS))
        view = ActionView(action_id=UUID(action.action_id), action=action.action, role=by.role, name=by.name,
                          at=action.at, details=details)
        async with pool.acquire() as conn, conn.transaction():
            row = await self._visible(conn, who, incident_id)
            _may_act(who, row, by)
            if (problem := body.reminder_problem(row["reminder_codes"])) is not None:
                raise InvalidInput(f"reminder: {problem}", errors=[FieldError(field="reminder", reason=problem)])
            if idempotency_key is not None:
                earlier = await claim_idempotency_key(
                    conn, key_namespace(who), idempotency_key, request_hash(body, "actions", str(incident_id)),
                    201, view, now,
                )
                if earlier is not None:
                    return ActionView.model_validate_json(earlier), True
            event = self._event(EventType.INCIDENT_ACTION_RECORDED, row, action.model_dump(mode="json"))
            await store.insert_action(conn, action)
            await store.advance(conn, incident_id, status_after(action), now)
            await enqueue(conn, [event])
        log.info("incident.action_recorded", incident_id=str(incident_id), action=body.action.value, role=by.role)
        return view, False

    def _event(self, type: EventType, incident: asyncpg.Record, data: dict[str, Any]) -> CloudEvent:
        return new_event(
            type, source=SOURCE, subject=str(incident["id"]), schoolid=incident["school_id"], data=data,
            correlationid=incident["correlation_id"], clock=self._clock, ids=self._ids,
        )


def _action_details(details: dict[str, Any], pupil_details: bool) -> dict[str, Any]:
    return details if pupil_details else action_for_every_reader(details)


def _may_act(who: Principal, incident: asyncpg.Record, by: Acknowledger) -> None:
    """Only the roles the incident's escalation chain tells acknowledge it and record its actions. Until triage has
    decided the chain (a moment after the report), the credentials alone decide; triage applies the same rule to
    what it is sent, so an acknowledgement from outside the chain never stops an escalation."""
    roles: list[str] | None = incident["chain_roles"]
    if not in_chain(by.role, roles):
        raise NotInChain(by.role, roles if isinstance(who, Integration) else None)


def status_after(action: IncidentActionRecorded) -> IncidentStatus:
    if action.action.value == "incident_closed":
        return IncidentStatus.CLOSED
    return IncidentStatus.ACTIONS_RECORDED


async def claim_idempotency_key(
    conn: Any, namespace: str, key: str, digest: str, status_code: int, answer: BaseModel, now: datetime
) -> str | None:
    """Claim `key` for this request, or return the JSON of the first answer given under it. A concurrent
    request with the same key waits on the row lock until the first one commits; the same key with
    another request is refused (422), never a silent overwrite."""
    claimed = await conn.fetchval(
        "INSERT INTO idempotency_keys (integration_id, key, request_hash, status_code, response, created_at)"
        " VALUES ($1, $2, $3, $4, $5::jsonb, $6) ON CONFLICT DO NOTHING RETURNING 1",
        namespace, key, digest, status_code, answer.model_dump_json(), now,
    )
    if claimed is not None:
        return None
    row = await conn.fetchrow(
        "SELECT request_hash, response FROM idempotency_keys WHERE integration_id = $1 AND key = $2", namespace, key
    )
    if row["request_hash"] != digest:
        raise IdempotencyKeyReused()
    return str(row["response"])
