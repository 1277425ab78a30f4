"""The notify service: consumes notifications.requested, delivers by email, SMS or webhook, reports back."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta

import httpx
from fastapi import FastAPI

from common.contracts import ChannelKind
from common.db import load_migrations
from common.events import Clock, utc_now
from common.http import configure_logging, serve, service_app
from common.runtime import Runtime, ServiceSpec
from common.topics import Topic
from notify.channels.base import Channel
from notify.channels.govuk_notify import GovUkNotifyChannel, GovUkNotifySettings, NotifyApiKey
from notify.channels.smtp import SmtpChannel, SmtpSettings
from notify.channels.webhook import WebhookChannel
from notify.config import NotifySettings
from notify.consumer import acknowledged_handler, requested_handler
from notify.delivery import Deliverer, DeliveryConfig, wake_channel
from notify.retry import BackoffPolicy
from notify.throttle import ThrottlePolicy


def build_channels(settings: NotifySettings, clock: Clock = utc_now) -> dict[ChannelKind, Channel]:
    """The channels the settings enable. GOV.UK Notify only with an API key, webhooks only with a secret.

    The HTTP channels share one pooled client for the life of the process: a client per send builds a new
    TLS context each time (~20 ms of CPU), which capped webhook delivery near 40/s."""
    channels: dict[ChannelKind, Channel] = {}
    http = httpx.AsyncClient()
    govuk: GovUkNotifySettings | None = None
    if settings.notify_api_key:
        govuk = GovUkNotifySettings(
            api_key=NotifyApiKey.parse(settings.notify_api_key),
            email_template_id=settings.notify_email_template_id,
            sms_template_id=settings.notify_sms_template_id,
            base_url=settings.notify_base_url,
            email_reply_to_id=settings.notify_email_reply_to_id,
            sms_sender_id=settings.notify_sms_sender_id,
        )
        if settings.notify_sms_template_id:
            channels[ChannelKind.SMS] = GovUkNotifyChannel(govuk, ChannelKind.SMS, client=http, clock=clock)
    smtp: Channel | None = None
    if settings.smtp_host:
        smtp = SmtpChannel(
            SmtpSettings(
                host=settings.smtp_host, port=settings.smtp_port, sender=settings.mail_from,
                starttls=settings.smtp_starttls, implicit_tls=settings.smtp_implicit_tls,
                username=settings.smtp_username, password=settings.smtp_password,
                timeout_seconds=settings.smtp_timeout_seconds, max_connections=settings.smtp_max_connections,
                idle_seconds=settings.smtp_idle_seconds,
                messages_per_connection=settings.smtp_messages_per_connection,
            ),
            clock=clock,
        )
    govuk_email = (
        GovUkNotifyChannel(govuk, ChannelKind.EMAIL, client=http, clock=clock)
        if govuk is not None and settings.notify_email_template_id else None
    )
    if settings.email_provider == "govuk_notify" and govuk_email is not None:
        channels[ChannelKind.EMAIL] = govuk_email
    elif smtp is not None:
        channels[ChannelKind.EMAIL] = smtp
    elif govuk_email is not None:
        channels[ChannelKind.EMAIL] = govuk_email
    if settings.webhook_secret:
        channels[ChannelKind.WEBHOOK] = WebhookChannel(
            settings.webhook_secret, client=http, clock=clock, allow_plain_http=settings.webhook_allow_plain_http
        )
    return channels


def delivery_config(settings: NotifySettings) -> DeliveryConfig:
    return DeliveryConfig(
        ack_secret=settings.token_secret,
        public_base_url=settings.public_base_url,
        ack_ttl=timedelta(hours=settings.ack_link_ttl_hours),
        backoff=BackoffPolicy(
            base_seconds=settings.retry_base_seconds, cap_seconds=settings.retry_cap_seconds,
            max_attempts=settings.retry_max_attempts,
            max_retry_after_seconds=settings.retry_max_retry_after_seconds,
        ),
        throttle=ThrottlePolicy(window=timedelta(seconds=settings.throttle_window_seconds)),
        lease=timedelta(seconds=settings.send_lease_seconds),
        batch_size=settings.delivery_batch,
        concurrency=settings.delivery_concurrency,
        poll_seconds=settings.delivery_poll_seconds,
        wake_channel=wake_channel(settings.schema_name),
    )


@dataclass
class NotifyService:
    runtime: Runtime
    deliverer: Deliverer


def build(
    settings: NotifySettings,
    *,
    clock: Clock = utc_now,
    channels: Mapping[ChannelKind, Channel] | None = None,
    consume: bool = True,
) -> NotifyService:
    """The runtime (consumer, outbox relay, delivery loop) and the deliverer, which tests may drive.
    `consume=False` runs delivery only (a worker that drains the deliveries table, or a test)."""
    holder: list[Runtime] = []
    deliverer = Deliverer(
        lambda: holder[0].pool,
        build_channels(settings, clock) if channels is None else channels,
        delivery_config(settings),
    )

    async def delivery_loop(runtime: Runtime, stop: asyncio.Event) -> None:
        try:
            if settings.delivery_loop:
                await deliverer.run(stop, clock)
            else:  # a test drives the deliverer; the channels' connections are still closed at the stop
                await stop.wait()
        finally:
            await deliverer.aclose()

    handler = requested_handler(clock, wake_channel(settings.schema_name))
    spec = ServiceSpec(
        settings=settings,
        migrations=load_migrations("notify.migrations"),
        handlers={
            Topic.NOTIFICATIONS_REQUESTED.value: handler,
            Topic.INCIDENTS_ACKNOWLEDGED.value: acknowledged_handler(),
        } if consume else {},
        background=[delivery_loop],
    )
    runtime = Runtime(spec)
    holder.append(runtime)
    return NotifyService(runtime, deliverer)


def create_app(settings: NotifySettings | None = None) -> FastAPI:
    settings = settings or NotifySettings()
    service = build(settings)
    app: FastAPI = service_app(service.runtime, title="Online-safety notify",
                      description="Delivers escalations by email, SMS and webhook.")
    app.state.settings = settings
    app.state.deliverer = service.deliverer
    return app


def run() -> None:
    settings = NotifySettings()
    configure_logging(settings)
    serve(create_app(settings), settings)
