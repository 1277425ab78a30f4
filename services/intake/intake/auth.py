"""Who is asking: an integration (API key), a signed-in person (signed token), or a one-time ack link.

Integrations send `X-API-Key`; people and acknowledgement links send `Authorization: Bearer <token>`
(tokens from `common.tokens`, HMAC-signed with the shared TOKEN_SECRET). A key is looked up by its
SHA-256, so the stored hashes are all intake ever holds.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from common.roles import normalise_role
from common.tokens import (
    AckLinkClaims,
    PersonClaims,
    Purpose,
    TokenError,
    WrongPurpose,
    verify_ack_token,
    verify_person_token,
)
from intake.config import IntakeSettings, hash_key
from intake.problems import NotAuthenticated


@dataclass(frozen=True)
class Integration:
    integration_id: str
    schools: frozenset[str]


@dataclass(frozen=True)
class Person:
    claims: PersonClaims

    @property
    def role(self) -> str:
        return normalise_role(self.claims.role)


@dataclass(frozen=True)
class AckLink:
    claims: AckLinkClaims


Principal = Integration | Person | AckLink

api_key_header = APIKeyHeader(name="X-API-Key", auto_error=False, description="An integration's API key.")
bearer = HTTPBearer(auto_error=False, description="A person's signed token, or a one-time acknowledgement link token.")


class Authenticator:
    def __init__(self, settings: IntakeSettings) -> None:
        # Only the keys' hashes are held, in memory as in the settings: a key is hashed on each request (about a
        # microsecond of SHA-256), never cached in the clear.
        self._keys: Mapping[str, Integration] = {
            k.key_sha256: Integration(k.integration_id, k.schools) for k in settings.integrations
        }
        self._secret = settings.token_secret

    def integration(self, api_key: str) -> Integration:
        found = self._keys.get(hash_key(api_key))
        if found is None:
            raise NotAuthenticated("The API key is not recognised.")
        return found

    def bearer(self, token: str, allowed: frozenset[Purpose]) -> Person | AckLink:
        try:
            if Purpose.PERSON in allowed:
                try:
                    return Person(verify_person_token(token, self._secret))
                except WrongPurpose:
                    if Purpose.ACK not in allowed:
                        raise
            return AckLink(verify_ack_token(token, self._secret))
        except WrongPurpose as exc:
            raise NotAuthenticated(f"This token cannot be used here: {exc}.") from None
        except TokenError as exc:
            raise NotAuthenticated(f"The token is not valid: {exc}.") from None


def _authenticator(request: Request) -> Authenticator:
    auth: Authenticator = request.app.state.authenticator
    return auth


def principal(
    *, integrations: bool = True, purposes: frozenset[Purpose] = frozenset()
) -> Callable[..., Awaitable[Principal]]:
    """A dependency that accepts the given kinds of credential and refuses the rest with 401."""

    async def dependency(
        request: Request,
        api_key: Annotated[str | None, Depends(api_key_header)],
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
    ) -> Principal:
        auth = _authenticator(request)
        if api_key and integrations:
            return auth.integration(api_key)
        if credentials is not None and purposes:
            return auth.bearer(credentials.credentials, purposes)
        wanted = " or ".join(
            (["an X-API-Key"] if integrations else []) + (["a Bearer token"] if purposes else [])
        )
        raise NotAuthenticated(f"Send {wanted}.")

    return dependency


def integration_of(request: Request) -> Integration:
    """The integration whose X-API-Key the request carries (reports take nothing else). A plain function, not a
    dependency, for the report endpoint that reads its request itself (`intake.api.incidents`)."""
    api_key = request.headers.get(api_key_header.model.name)
    if api_key:
        return _authenticator(request).integration(api_key)
    raise NotAuthenticated("Send an X-API-Key.")


reader = principal(purposes=frozenset({Purpose.PERSON}))
acknowledger = principal(purposes=frozenset({Purpose.PERSON, Purpose.ACK}))
actor = principal(purposes=frozenset({Purpose.PERSON}))
