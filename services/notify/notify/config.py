"""Notify's settings: the shared service settings plus its channels, retry policy and throttling window.

Environment variables are the field names in upper case (SMTP_HOST, NOTIFY_API_KEY, WEBHOOK_SECRET...).
The acknowledgement links point at PUBLIC_BASE_URL (intake serves the one-button page there).
"""

from __future__ import annotations

from pydantic import Field

from common.settings import ServiceSettings


class NotifySettings(ServiceSettings):  # type: ignore[misc, unused-ignore]
    service_name: str = "notify"
    outbox_linger_ms: int = 200  # its outbox holds delivery outcomes, not what tells a person: publish them together

    # Email over SMTP (the embedded SMTP sink by default).
    smtp_host: str | None = Field(default="127.0.0.1", description="Empty: no SMTP channel.")
    smtp_port: int = 2525
    smtp_username: str | None = None
    smtp_password: str | None = Field(default=None, repr=False)
    smtp_starttls: bool = False
    smtp_implicit_tls: bool = False
    smtp_timeout_seconds: float = 30.0
    smtp_max_connections: int = Field(default=8, description="SMTP connections open at once (kept for reuse).")
    smtp_idle_seconds: float = Field(
        default=30.0, description="An unused SMTP connection is closed after this; keep it under the relay's."
    )
    smtp_messages_per_connection: int = 100
    mail_from: str = "safeguarding-alerts@school.example"
    email_provider: str = Field(
        default="smtp", description="'smtp' or 'govuk_notify': who sends the email channel when both are set."
    )

    # GOV.UK Notify: enabled only when an API key is set.
    notify_api_key: str | None = Field(default=None, repr=False)
    notify_base_url: str = "https://api.notifications.service.gov.uk"
    notify_email_template_id: str = ""
    notify_sms_template_id: str = ""
    notify_email_reply_to_id: str | None = None
    notify_sms_sender_id: str | None = None

    # Standard Webhooks signing secret (whsec_...): enabled only when set.
    webhook_secret: str | None = Field(default=None, repr=False)
    webhook_allow_plain_http: bool = False

    # Acknowledgement links.
    ack_link_ttl_hours: float = 72.0

    # Delivery: retries, in-flight lease, throttling, polling.
    retry_base_seconds: float = 2.0
    retry_cap_seconds: float = 300.0
    retry_max_attempts: int = 6
    retry_max_retry_after_seconds: float = 900.0
    send_lease_seconds: float = 120.0
    throttle_window_seconds: float = 120.0
    delivery_poll_seconds: float = Field(
        default=1.0, description="Longest sleep of the delivery loop; a new request wakes it at once (LISTEN)."
    )
    delivery_batch: int = 100
    delivery_concurrency: int = Field(
        default=16, description="Sends in flight at once; each holds a database connection (db_pool_max)."
    )
    db_pool_max: int = 32  # the sends in flight, the consumer's partitions, the relay and two listeners
    delivery_loop: bool = Field(default=True, description="Run the delivery loop (tests may drive it by hand).")
