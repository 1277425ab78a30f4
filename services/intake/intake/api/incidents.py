"""/v1/incidents: report, read status, acknowledge, record actions."""

from __future__ import annotations

from typing import Annotated
from uuid import UUID

from fastapi import APIRouter, Depends, Header, Request, Response, status

from common.incident import IncidentReport, sensitive_values
from common.logging import sensitive
from intake.api.body import documented_body, json_body
from intake.api.examples import ACK_EXAMPLES, ACTION_EXAMPLES, REPORT_EXAMPLES
from intake.auth import Integration, Principal, acknowledger, actor, integration_only, reader
from intake.models import AcknowledgementRequest, AcknowledgementView, ActionRequest, ActionView, IncidentAccepted
from intake.models import IncidentView as IncidentViewModel
from intake.problems import (
    AckLinkUsed,
    BodyTooLarge,
    IdempotencyKeyReused,
    ImageryRefused,
    IncidentNotAccessible,
    InvalidInput,
    MalformedJson,
    NotAuthenticated,
    UnsupportedMediaType,
    WrongSchool,
    responses,
)
from intake.service import Intake

router = APIRouter(prefix="/v1/incidents", tags=["incidents"])

_WRITE_ERRORS = (MalformedJson, NotAuthenticated, IncidentNotAccessible, BodyTooLarge, UnsupportedMediaType,
                 InvalidInput)


async def _intake(request: Request) -> Intake:  # async: a plain def would run in a worker thread
    service: Intake = request.app.state.intake
    return service


IdempotencyKey = Annotated[
    str | None,
    Header(alias="Idempotency-Key", min_length=1, max_length=255, pattern=r"^[\x21-\x7e]+$",
           description="Makes a retried POST return the first answer and create nothing new (per integration)."),
]


@router.post(
    "",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=IncidentAccepted,
    summary="Report an incident",
    description=(
        "Accepted (202) once the report is durable; triage and escalation follow. Never attach images, video "
        "or files: the school's policy forbids copying or sharing them. Say where the evidence is instead."
    ),
    openapi_extra=documented_body(IncidentReport, REPORT_EXAMPLES),
    responses=responses(MalformedJson, NotAuthenticated, WrongSchool, BodyTooLarge, UnsupportedMediaType,
                        ImageryRefused),
)
async def report_incident(
    request: Request,
    response: Response,
    who: Annotated[Principal, Depends(integration_only)],
    report: Annotated[IncidentReport, Depends(json_body(IncidentReport))],
    intake: Annotated[Intake, Depends(_intake)],
    idempotency_key: IdempotencyKey = None,
) -> IncidentAccepted:
    assert isinstance(who, Integration)
    with sensitive(sensitive_values(report.model_dump(mode="json"))):
        accepted, replayed = await intake.report(request.app.state.runtime.pool, who, report, idempotency_key)
    response.headers["Location"] = accepted.status_url
    if replayed:
        response.headers["Idempotent-Replayed"] = "true"
    return accepted


@router.get(
    "/{incident_id}",
    response_model=IncidentViewModel,
    summary="An incident's current status",
    description="For the integration that reported it and the school's staff. Pupil-identifying fields and the "
    "description are included only for the DSL, deputy DSL and headteacher (and the reporting system).",
    responses=responses(NotAuthenticated, IncidentNotAccessible),
)
async def get_incident(
    request: Request,
    incident_id: UUID,
    who: Annotated[Principal, Depends(reader)],
    intake: Annotated[Intake, Depends(_intake)],
) -> IncidentViewModel:
    return await intake.view(request.app.state.runtime.pool, who, incident_id)


@router.post(
    "/{incident_id}/acknowledgements",
    status_code=status.HTTP_201_CREATED,
    response_model=AcknowledgementView,
    summary="Acknowledge an escalation",
    description="With a person's Bearer token, a one-time acknowledgement-link token (as Bearer; it works once), "
    "or an integration's key acting for a named member of staff. Publishes incidents.acknowledged.",
    openapi_extra=documented_body(AcknowledgementRequest, ACK_EXAMPLES, required=False),
    responses=responses(*_WRITE_ERRORS, AckLinkUsed),
)
async def acknowledge(
    request: Request,
    incident_id: UUID,
    who: Annotated[Principal, Depends(acknowledger)],
    body: Annotated[AcknowledgementRequest | None, Depends(json_body(AcknowledgementRequest, required=False))],
    intake: Annotated[Intake, Depends(_intake)],
) -> AcknowledgementView:
    return await intake.acknowledge(request.app.state.runtime.pool, who, incident_id, body)


@router.post(
    "/{incident_id}/actions",
    status_code=status.HTTP_201_CREATED,
    response_model=ActionView,
    summary="Record an action taken",
    description="Referral made (with the agency's reference), device secured, parents informed or the reason "
    "not to, ICO notified, incident closed (with outcome). Publishes incidents.actions. An Idempotency-Key "
    "(per integration or person) makes a retried POST (a double-pressed button) return the first answer.",
    openapi_extra=documented_body(ActionRequest, ACTION_EXAMPLES),
    responses=responses(*_WRITE_ERRORS, IdempotencyKeyReused),
)
async def record_action(
    request: Request,
    response: Response,
    incident_id: UUID,
    who: Annotated[Principal, Depends(actor)],
    body: Annotated[ActionRequest | None, Depends(json_body(ActionRequest))],
    intake: Annotated[Intake, Depends(_intake)],
    idempotency_key: IdempotencyKey = None,
) -> ActionView:
    assert body is not None
    view, replayed = await intake.record_action(request.app.state.runtime.pool, who, incident_id, body, idempotency_key)
    if replayed:
        response.headers["Idempotent-Replayed"] = "true"
    return view
