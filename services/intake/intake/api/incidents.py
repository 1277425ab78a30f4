"""/v1/incidents: report, read status, acknowledge, record actions."""

from __future__ import annotations

from typing import Annotated
from uuid import UUID

from fastapi import APIRouter, Depends, Header, Request, Response, status
from fastapi.exceptions import RequestValidationError
from pydantic import StringConstraints, TypeAdapter, ValidationError

from common.incident import IncidentReport
from intake.api.body import documented_body, json_body
from intake.api.examples import ACK_EXAMPLES, ACTION_EXAMPLES, REPORT_EXAMPLES
from intake.auth import Principal, acknowledger, actor, api_key_header, integration_of, reader
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
    NotInChain,
    UnsupportedMediaType,
    WrongSchool,
    responses,
)
from intake.service import Intake

router = APIRouter(prefix="/v1/incidents", tags=["incidents"])

_WRITE_ERRORS = (MalformedJson, NotAuthenticated, IncidentNotAccessible, NotInChain, BodyTooLarge,
                 UnsupportedMediaType, InvalidInput)


async def _intake(request: Request) -> Intake:  # async: a plain def would run in a worker thread
    service: Intake = request.app.state.intake
    return service


_KEY_RULES = {"min_length": 1, "max_length": 255, "pattern": r"^[\x21-\x7e]+$"}
_KEY_DESCRIPTION = "Makes a retried POST return the first answer and create nothing new (per integration)."
IdempotencyKey = Annotated[str | None, Header(alias="Idempotency-Key", description=_KEY_DESCRIPTION, **_KEY_RULES)]
_idempotency_key = TypeAdapter(Annotated[str, StringConstraints(**_KEY_RULES)])
_parse_report = json_body(IncidentReport)


def _idempotency_key_of(request: Request) -> str | None:
    raw = request.headers.get("idempotency-key")
    if raw is None:
        return None
    try:
        return _idempotency_key.validate_python(raw)
    except ValidationError as exc:
        errors = exc.errors(include_url=False, include_input=False)
        raise RequestValidationError([{**e, "loc": ("header", "Idempotency-Key")} for e in errors]) from None


@router.post(
    "",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=IncidentAccepted,
    summary="Report an incident",
    description=(
        "Accepted (202) once the report is durable; triage and escalation follow. Never attach images, video "
        "or files: the school's policy forbids copying or sharing them. Say where the evidence is instead."
    ),
    openapi_extra={
        **documented_body(IncidentReport, REPORT_EXAMPLES),
        "security": [{api_key_header.scheme_name: []}],
        "parameters": [{"name": "Idempotency-Key", "in": "header", "required": False,
                        "description": _KEY_DESCRIPTION, "schema": _idempotency_key.json_schema()}],
    },
    responses=responses(MalformedJson, NotAuthenticated, WrongSchool, BodyTooLarge, UnsupportedMediaType,
                        ImageryRefused),
)
async def report_incident(request: Request) -> Response:
    """The busiest endpoint reads its request itself, in the order FastAPI's dependencies would (credentials,
    body, then the header): resolving four dependencies and a header parameter cost about 60 us of CPU per
    report, an eighth of all intake spends on one (measured with bench.intake). The credential, body and header
    are documented above, in `openapi_extra`."""
    who = integration_of(request)
    report = await _parse_report(request)
    assert report is not None
    intake: Intake = request.app.state.intake
    accepted, replayed = await intake.report(request.app.state.runtime.pool, who, report,
                                             _idempotency_key_of(request))
    # Serialised here, once: the answer is already a validated IncidentAccepted (the documented response_model).
    headers = {"Location": accepted.status_url}
    if replayed:
        headers["Idempotent-Replayed"] = "true"
    return Response(accepted.model_dump_json(), status.HTTP_202_ACCEPTED, headers, media_type="application/json")


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
