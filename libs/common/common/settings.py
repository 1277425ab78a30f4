"""Settings shared by every service, read from the environment (pydantic-settings)."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class ServiceSettings(BaseSettings):
    """What every service needs to run. Environment variables use the field names in upper case."""

    model_config = SettingsConfigDict(env_file=None, extra="ignore")

    service_name: str = "service"
    database_url: str = Field(
        default="postgresql://postgres@127.0.0.1:5432/postgres",
        description="Administrative URL: used to apply migrations and create the service's own role.",
    )
    db_schema: str = Field(default="", description="Defaults to the service name.")
    db_app_password: str | None = Field(
        default=None, description="Password of the service's least-privilege role; derived if unset."
    )
    db_app_url: str | None = Field(
        default=None,
        description="URL of the service's least-privilege role. When set, the service uses it alone and never "
        "DATABASE_URL: it applies no migrations (`python -m common.migrate <service>` does, with the administrative "
        "URL, beforehand) and refuses to start on a schema that lacks one. `make run` starts every service so.",
    )
    db_pool_max: int = 10
    kafka_bootstrap_servers: str = "127.0.0.1:9092"
    topic_prefix: str = Field(default="", description="Prefix of every topic name (tests, tenants).")
    topic_partitions: int = 3
    http_host: str = "127.0.0.1"
    http_port: int = 8000
    log_format: str = Field(default="json", description="'json' or 'console'.")
    log_level: str = "info"
    gc_gen0_threshold: int = Field(
        default=10_000, ge=700,
        description="The service process's cyclic GC collects its youngest generation after this many net container "
        "allocations (CPython's default: 700). A consumer batch keeps thousands of containers alive while it is "
        "handled, so with the default each batch paid for several collections and promoted its objects towards "
        "full collections of the whole heap (audit: the collector took ~12% of the append clock; triage: "
        "0.76 -> 0.57 ms of CPU per report once start-up's objects were frozen).",
    )
    outbox_poll_seconds: float = 1.0
    consumer_fetch_wait_ms: int = Field(
        default=50, ge=1, le=5000,
        description="How long the consumer's fetch waits at the broker. The embedded broker (Tansu 0.6) answers only "
        "when the wait is over, not when a record arrives, so this is each hop's delay (half of it on average); "
        "each waiting fetch also costs the broker CPU. Services on the path to a person being told wait less.",
    )
    consumer_gather_ms: int = Field(
        default=0, ge=0, le=10_000,
        description="After a batch that was not full, the consumer polls again only this long after its last poll, "
        "so that what arrives meanwhile is handled together: a transaction, a fetch and an offset commit for several "
        "events instead of each. For consumers off the path to a person being told (audit, intake's status); 0 on it.",
    )
    outbox_linger_ms: int = Field(
        default=0, ge=0, le=10_000,
        description="The outbox relay, woken by a commit, waits this long before its pass, so that what commits "
        "meanwhile is published in the same pass. For events off the path to a person being told (notify's "
        "delivery outcomes); 0 where they are on it (intake's reports, triage's notification requests).",
    )
    outbox_retention_days: float = Field(
        default=7.0, description="How long published events stay in the outbox, ready to be re-driven."
    )
    outbox_watch_seconds: float = Field(
        default=5.0, description="How often the outbox is compared with the broker to notice lost events."
    )
    token_secret: str = Field(
        default="dev-only-secret-change-me-0123456789abcdef",
        description="HMAC secret for people's tokens and acknowledgement links (intake and notify share it).",
    )
    public_base_url: str = Field(
        default="http://127.0.0.1:8000", description="Where people open links (intake or the web app)."
    )

    @property
    def schema_name(self) -> str:
        return self.db_schema or self.service_name
