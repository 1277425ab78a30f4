"""Triage's settings: the shared service settings, the school policies' directory and the timers' pace."""

from __future__ import annotations

from pathlib import Path

from pydantic import AliasChoices, Field

from common.settings import ServiceSettings
from triage.policy import PolicyBook, load_policies


class TriageSettings(ServiceSettings):
    service_name: str = "triage"
    policy_dir: Path | None = Field(
        default=None,
        validation_alias=AliasChoices("policy_dir", "triage_policy_dir"),
        description="POLICY_DIR: one YAML policy per school (named after its school_id); "
        "unset: only the shipped default policy.",
    )
    timer_poll_seconds: float = Field(
        default=1.0, gt=0, description="How often due timers, and early signals stranded by scale-out, are looked for."
    )
    timer_batch: int = Field(default=100, gt=0, description="Timers claimed per transaction.")
    timer_grace_seconds: float = Field(
        default=60.0, ge=0, description="A timer overdue by more than this is counted as late (should be 0)."
    )
    reminder_min_period_minutes: float = Field(
        default=60.0, gt=0, description="Shortest interval between re-notices of one overdue reminder."
    )

    def load_policies(self) -> PolicyBook:
        """Every school's policy, checked; raises `PolicyError` naming the file, line and path."""
        return load_policies(self.policy_dir)
