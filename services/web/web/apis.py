"""The services' own HTTP APIs, called for a signed-in person with a short-lived person token (common.tokens)
minted for their school and role, so intake and audit apply their own access rules to every call."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import httpx

from common.tokens import issue_person_token

_TOKEN_TTL = timedelta(minutes=5)


class ApiError(Exception):
    """A service refused or failed; `status` is its HTTP status (0: it did not answer), `problem` the last part of
    its problem+json type ('not-in-escalation-chain'), when it gave one."""

    def __init__(self, status: int, detail: str, problem: str = "") -> None:
        super().__init__(f"{status}: {detail}")
        self.status = status
        self.detail = detail
        self.problem = problem


def _refusal(answer: httpx.Response) -> ApiError:
    try:
        body = answer.json()
    except ValueError:
        return ApiError(answer.status_code, answer.text[:500])
    if not isinstance(body, dict):
        return ApiError(answer.status_code, str(body))
    problem = str(body.get("type") or "").rsplit("/", 1)[-1]
    return ApiError(answer.status_code, str(body.get("detail") or body.get("title") or body), problem)


class Apis:
    def __init__(self, *, intake_url: str, audit_url: str, token_secret: str, timeout: float) -> None:
        self._secret = token_secret
        self._client = httpx.AsyncClient(timeout=timeout)
        self._intake = intake_url.rstrip("/")
        self._audit = audit_url.rstrip("/")

    async def close(self) -> None:
        await self._client.aclose()

    def _bearer(self, *, person_id: str, role: str, school_id: str) -> dict[str, str]:
        token = issue_person_token(self._secret, person_id=person_id, role=role, school_id=school_id, ttl=_TOKEN_TTL)
        return {"Authorization": f"Bearer {token}"}

    async def _call(self, method: str, url: str, headers: dict[str, str], **kwargs: Any) -> httpx.Response:
        try:
            answer = await self._client.request(method, url, headers=headers, **kwargs)
        except httpx.HTTPError as exc:
            raise ApiError(0, f"{url.split('/v1/')[0]} did not answer: {type(exc).__name__}") from exc
        if answer.status_code >= 400:
            raise _refusal(answer)
        return answer

    async def audit_json(self, who: dict[str, str], path: str, params: dict[str, str] | None = None) -> Any:
        answer = await self._call("GET", f"{self._audit}/v1/audit{path}", self._bearer(**who), params=params)
        return answer.json()

    async def audit_text(self, who: dict[str, str], path: str, params: dict[str, str]) -> str:
        return (await self._call("GET", f"{self._audit}/v1/audit{path}", self._bearer(**who), params=params)).text

    async def incident(self, who: dict[str, str], incident_id: str) -> Any:
        return (await self._call("GET", f"{self._intake}/v1/incidents/{incident_id}", self._bearer(**who))).json()

    async def record_action(
        self, who: dict[str, str], incident_id: str, body: dict[str, Any], idempotency_key: str | None = None
    ) -> Any:
        """With the rendered form's own key, so a double-pressed button records the action once."""
        url = f"{self._intake}/v1/incidents/{incident_id}/actions"
        headers = self._bearer(**who) | ({"Idempotency-Key": idempotency_key} if idempotency_key else {})
        return (await self._call("POST", url, headers, json=body)).json()

    async def acknowledge(self, who: dict[str, str], incident_id: str) -> Any:
        url = f"{self._intake}/v1/incidents/{incident_id}/acknowledgements"
        return (await self._call("POST", url, self._bearer(**who))).json()

    async def acknowledge_with_link(self, ack_token: str, incident_id: str) -> Any:
        """The link's own one-time token as Bearer: intake spends it and records the link's recipient."""
        url = f"{self._intake}/v1/incidents/{incident_id}/acknowledgements"
        return (await self._call("POST", url, {"Authorization": f"Bearer {ack_token}"})).json()
