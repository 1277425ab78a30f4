"""The web app's settings: where intake and audit answer, who the members are (school policies), mail and
session lifetimes."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from urllib.parse import urlsplit

from pydantic import AliasChoices, Field

from common.settings import ServiceSettings

LOOPBACK_HOSTS = frozenset({"localhost", "127.0.0.1", "::1", "[::1]"})


class WebSettings(ServiceSettings):  # type: ignore[misc,unused-ignore]
    service_name: str = "web"
    intake_url: str = Field(default="http://127.0.0.1:8001", description="INTAKE_URL: intake's HTTP API.")
    audit_url: str = Field(default="http://127.0.0.1:8004", description="AUDIT_URL: audit's HTTP API.")
    policy_dir: Path | None = Field(
        default=None,
        validation_alias=AliasChoices("policy_dir", "triage_policy_dir"),
        description="POLICY_DIR: the school policies (as triage reads them); their contacts are the members.",
    )
    smtp_host: str = "127.0.0.1"
    smtp_port: int = 2525
    mail_from: str = Field(default="no-reply@online-safety.example", validation_alias=AliasChoices("web_mail_from"))
    session_minutes: int = Field(default=8 * 60, gt=0, validation_alias=AliasChoices("web_session_minutes"))
    signin_link_minutes: int = Field(default=15, gt=0, validation_alias=AliasChoices("web_signin_link_minutes"))
    api_timeout_seconds: float = 10.0
    assets_dir: Path | None = Field(
        default=None, validation_alias=AliasChoices("web_assets_dir"),
        description="WEB_ASSETS_DIR: govuk-frontend's dist/govuk folder; unset: services/web/node_modules's (npm ci).",
    )

    @property
    def session_ttl(self) -> timedelta:
        return timedelta(minutes=self.session_minutes)

    @property
    def signin_ttl(self) -> timedelta:
        return timedelta(minutes=self.signin_link_minutes)

    @property
    def secure_cookies(self) -> bool:
        """Secure cookies everywhere but a plain-HTTP address on this machine (browsers drop them there)."""
        parts = urlsplit(self.public_base_url)
        return parts.scheme == "https" or (parts.hostname or "") not in LOOPBACK_HOSTS
