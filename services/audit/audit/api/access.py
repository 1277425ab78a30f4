"""Who may read the audit log: signed person tokens (common.tokens), and what their role lets them see."""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import HTTPException, Request

from audit.config import AuditSettings
from common.tokens import PersonClaims, TokenError, verify_person_token


@dataclass(frozen=True)
class Reader:
    claims: PersonClaims
    full: bool  # sees pupil-identifying fields

    @property
    def school_id(self) -> str:
        school: str = self.claims.school_id
        return school


def reader(request: Request) -> Reader:
    settings: AuditSettings = request.app.state.settings
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise HTTPException(401, "a person's bearer token is required", headers={"WWW-Authenticate": "Bearer"})
    try:
        claims = verify_person_token(token.strip(), settings.token_secret)
    except TokenError as exc:
        raise HTTPException(401, f"token refused: {exc}", headers={"WWW-Authenticate": "Bearer"}) from exc
    if claims.role in settings.read_roles_full:
        return Reader(claims, full=True)
    if claims.role in settings.read_roles_redacted:
        return Reader(claims, full=False)
    raise HTTPException(403, f"the role {claims.role!r} may not read the audit log")


def require_pupil_fields(who: Reader, wanted: bool) -> bool:
    """Whether to show pupil-identifying fields; asking for them without the right role is refused."""
    if wanted and not who.full:
        raise HTTPException(403, f"the role {who.claims.role!r} does not see pupil-identifying fields")
    return who.full if not wanted else True
