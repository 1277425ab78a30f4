"""Errors as types, and their one mapping to RFC 9457 problem+json responses."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import asyncpg
import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

log = structlog.get_logger(__name__)

PROBLEM_JSON = "application/problem+json"
TYPE_BASE = "https://online-safety.example/problems/"


class FieldError(BaseModel):
    field: str = Field(examples=["category"], description="Where in the request: a dotted path.")
    reason: str = Field(examples=["Input should be 'child_sexual_abuse_imagery', 'criminally_obscene_content' ..."])


class Problem(BaseModel):
    """RFC 9457 problem details, with the fields at fault."""

    type: str = Field(examples=[TYPE_BASE + "validation"])
    title: str = Field(examples=["The request is not valid"])
    status: int = Field(examples=[422])
    detail: str | None = None
    instance: str | None = None
    errors: list[FieldError] = Field(default_factory=list)


class ProblemError(Exception):
    """Base of every refusal intake makes; `slug` names the problem type."""

    status = 400
    slug = "bad-request"
    title = "Bad request"

    def __init__(self, detail: str | None = None, *, errors: Sequence[FieldError] = (),
                 headers: Mapping[str, str] | None = None) -> None:
        super().__init__(detail or self.title)
        self.detail = detail
        self.errors = list(errors)
        self.headers = dict(headers or {})

    def problem(self, instance: str | None = None) -> Problem:
        return Problem(type=TYPE_BASE + self.slug, title=self.title, status=self.status, detail=self.detail,
                       instance=instance, errors=self.errors)


class NotAuthenticated(ProblemError):
    status = 401
    slug = "not-authenticated"
    title = "Missing or invalid credentials"

    def __init__(self, detail: str) -> None:
        super().__init__(detail, headers={"WWW-Authenticate": 'Bearer realm="intake"'})


class WrongSchool(ProblemError):
    status = 403
    slug = "wrong-school"
    title = "Your credentials do not cover this school"


class IncidentNotAccessible(ProblemError):
    """Unknown ids and other schools' incidents get this same answer, so existence never leaks."""

    status = 403
    slug = "incident-not-accessible"
    title = "No incident with this id is open to your credentials"

    def __init__(self) -> None:
        super().__init__("The incident does not exist, or it belongs to a school or integration you do not act for.")


class NotInChain(ProblemError):
    """A role the incident's escalation chain does not tell: a governor reads the log but does not stop an
    escalation, and a headteacher who is the subject of a report is not in its chain (the chair of governors is).
    People are not told which roles are (that would say who the report is about); the integration that reported
    the incident is, so that it can map its users' roles."""

    status = 403
    slug = "not-in-escalation-chain"
    title = "Only the people this incident is escalated to may acknowledge it or record its actions"

    def __init__(self, role: str, chain_roles: Sequence[str] | None) -> None:
        if chain_roles is None:
            super().__init__(f"The role '{role}' is not one this incident is escalated to.")
            return
        reason = f"'{role}' is not one of the roles this incident is escalated to: {', '.join(chain_roles)}"
        super().__init__(f"by.role: {reason}.", errors=[FieldError(field="by.role", reason=reason)])


class NotFound(ProblemError):
    status = 404
    slug = "not-found"
    title = "Not found"


class MethodNotAllowed(ProblemError):
    status = 405
    slug = "method-not-allowed"
    title = "Method not allowed"


class AckLinkUsed(ProblemError):
    status = 409
    slug = "ack-link-used"
    title = "This acknowledgement link has already been used"

    def __init__(self) -> None:
        super().__init__("Each acknowledgement link works once. Sign in to see who acknowledged the incident.")


class BodyTooLarge(ProblemError):
    status = 413
    slug = "body-too-large"
    title = "Request body too large"


class UnsupportedMediaType(ProblemError):
    status = 415
    slug = "unsupported-media-type"
    title = "Send application/json"


class InvalidInput(ProblemError):
    status = 422
    slug = "validation"
    title = "The request is not valid"


class MalformedJson(ProblemError):
    status = 400
    slug = "malformed-json"
    title = "The body is not valid JSON"


class IdempotencyKeyReused(ProblemError):
    status = 422
    slug = "idempotency-key-reused"
    title = "This Idempotency-Key was used with a different request"

    def __init__(self) -> None:
        super().__init__(
            "An Idempotency-Key identifies one report: retry with exactly the same body, or use a new key.",
            errors=[FieldError(field="header.Idempotency-Key", reason="already used with a different body")],
        )


class ImageryRefused(ProblemError):
    """Seeds 000 and 001: never copy or share the material; say where it is instead."""

    status = 422
    slug = "imagery-refused"
    title = "Images, video and files are not accepted"

    def __init__(self, where: str, what: str) -> None:
        super().__init__(
            f"The request carries {what} in {where}. The school's policy forbids copying or sharing such "
            "material (doing so may itself be an offence): do not attach it. Record where the evidence is "
            "instead, in 'evidence': the device, its location, who secured it and when, and whether it is "
            "isolated from the network.",
            errors=[FieldError(field=where, reason=f"contains {what}")],
        )


class DependencyUnavailable(ProblemError):
    """Our database did not answer (restarting, say): nothing was accepted, and a retry soon will work."""

    status = 503
    slug = "unavailable"
    title = "Temporarily unavailable"

    def __init__(self) -> None:
        super().__init__("The service cannot reach its database just now; nothing was accepted. Retry shortly "
                         "with the same Idempotency-Key.", headers={"Retry-After": str(RETRY_AFTER_SECONDS)})


RETRY_AFTER_SECONDS = 2
# What a database that is down or restarting raises through the pool: not a fault of ours or of the request.
DEPENDENCY_DOWN = (OSError, TimeoutError, asyncpg.InterfaceError, asyncpg.PostgresConnectionError,
                   asyncpg.CannotConnectNowError)


def problem_response(exc: ProblemError, instance: str | None = None) -> JSONResponse:
    body = exc.problem(instance).model_dump(mode="json", exclude_none=True)
    return JSONResponse(body, status_code=exc.status, media_type=PROBLEM_JSON, headers=exc.headers)


def field_path(loc: Sequence[Any]) -> str:
    """A pydantic error location as a dotted path: ('body', 'subjects', 0, 'kind') -> 'subjects[0].kind'."""
    parts = list(loc)
    if parts and parts[0] == "body":
        parts = parts[1:]
    out = ""
    for p in parts:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out or "(body)"


def validation_problem(errors: Sequence[Any]) -> ProblemError:
    """Pydantic errors without their input values (which may name a pupil)."""
    if any(e.get("type") == "json_invalid" for e in errors):
        return MalformedJson("The body could not be parsed as JSON.")
    fields = [FieldError(field=field_path(e.get("loc", ())), reason=str(e.get("msg", "invalid"))) for e in errors]
    detail = "; ".join(f"{f.field}: {f.reason}" for f in fields[:5])
    return InvalidInput(detail, errors=fields)


def install(app: FastAPI) -> None:
    """Map every error to problem+json, here and nowhere else."""

    async def on_problem(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, ProblemError)
        return problem_response(exc, request.url.path)

    async def on_validation(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        return problem_response(validation_problem(exc.errors()), request.url.path)

    async def on_http(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        mapped: ProblemError
        if exc.status_code == 404:
            mapped = NotFound("No such resource.")
        elif exc.status_code == 405:
            mapped = MethodNotAllowed("This resource does not accept that method.")
        else:
            mapped = ProblemError(str(exc.detail))
            mapped.status = exc.status_code
        return problem_response(mapped, request.url.path)

    async def on_unexpected(request: Request, exc: Exception) -> JSONResponse:
        if isinstance(exc, DEPENDENCY_DOWN):
            log.warning("http.dependency_unavailable", path=request.url.path, error=type(exc).__name__)
            return problem_response(DependencyUnavailable(), request.url.path)
        log.error("http.unhandled_error", path=request.url.path, error=type(exc).__name__)
        err = ProblemError("An unexpected error occurred; nothing was accepted. Retry later.")
        err.status, err.slug, err.title = 500, "internal", "Internal error"
        return problem_response(err, request.url.path)

    app.add_exception_handler(ProblemError, on_problem)
    app.add_exception_handler(RequestValidationError, on_validation)
    app.add_exception_handler(StarletteHTTPException, on_http)
    app.add_exception_handler(Exception, on_unexpected)


def responses(*errors: type[ProblemError]) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` entries for the problems an endpoint can answer with."""
    out: dict[int | str, dict[str, Any]] = {}
    for e in errors:
        if e.status in out:  # two problems share a status: the entry names both
            out[e.status]["description"] += f"; or: {e.title}"
            continue
        out[e.status] = {"model": Problem, "description": e.title, "content": {PROBLEM_JSON: {}}}
    return out
