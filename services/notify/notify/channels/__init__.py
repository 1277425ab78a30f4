"""Delivery adapters: one per way of reaching a person, all behind `channels.base.Channel`."""

from notify.channels.base import (
    Channel,
    DeliveryError,
    DeliveryReceipt,
    OutgoingMessage,
    PermanentDeliveryError,
    RetryableDeliveryError,
)

__all__ = [
    "Channel",
    "DeliveryError",
    "DeliveryReceipt",
    "OutgoingMessage",
    "PermanentDeliveryError",
    "RetryableDeliveryError",
]
