"""The topic registry: every Kafka topic of the product, and which event type travels on which."""

from __future__ import annotations

from enum import StrEnum


class Topic(StrEnum):
    INCIDENTS_REPORTED = "incidents.reported"
    INCIDENTS_TRIAGED = "incidents.triaged"
    NOTIFICATIONS_REQUESTED = "notifications.requested"
    NOTIFICATIONS_DELIVERED = "notifications.delivered"
    NOTIFICATIONS_FAILED = "notifications.failed"
    NOTIFICATIONS_WITHHELD = "notifications.withheld"
    INCIDENTS_ACKNOWLEDGED = "incidents.acknowledged"
    INCIDENTS_ESCALATED = "incidents.escalated"
    INCIDENTS_ACTIONS = "incidents.actions"

    @property
    def dlq(self) -> str:
        return dead_letter_topic(self.value)


class EventType(StrEnum):
    """Versioned CloudEvents `type` values. A new shape of an event gets a new version, never an edit."""

    INCIDENT_REPORTED = "uk.school.safety.incident.reported.v1"
    INCIDENT_TRIAGED = "uk.school.safety.incident.triaged.v1"
    NOTIFICATION_REQUESTED = "uk.school.safety.notification.requested.v1"
    NOTIFICATION_DELIVERED = "uk.school.safety.notification.delivered.v1"
    NOTIFICATION_FAILED = "uk.school.safety.notification.failed.v1"
    NOTIFICATION_WITHHELD = "uk.school.safety.notification.withheld.v1"
    INCIDENT_ACKNOWLEDGED = "uk.school.safety.incident.acknowledged.v1"
    INCIDENT_ESCALATED = "uk.school.safety.incident.escalated.v1"
    INCIDENT_ACTION_RECORDED = "uk.school.safety.incident.action-recorded.v1"


TOPIC_OF: dict[EventType, Topic] = {
    EventType.INCIDENT_REPORTED: Topic.INCIDENTS_REPORTED,
    EventType.INCIDENT_TRIAGED: Topic.INCIDENTS_TRIAGED,
    EventType.NOTIFICATION_REQUESTED: Topic.NOTIFICATIONS_REQUESTED,
    EventType.NOTIFICATION_DELIVERED: Topic.NOTIFICATIONS_DELIVERED,
    EventType.NOTIFICATION_FAILED: Topic.NOTIFICATIONS_FAILED,
    EventType.NOTIFICATION_WITHHELD: Topic.NOTIFICATIONS_WITHHELD,
    EventType.INCIDENT_ACKNOWLEDGED: Topic.INCIDENTS_ACKNOWLEDGED,
    EventType.INCIDENT_ESCALATED: Topic.INCIDENTS_ESCALATED,
    EventType.INCIDENT_ACTION_RECORDED: Topic.INCIDENTS_ACTIONS,
}

DLQ_SUFFIX = ".dlq"


def dead_letter_topic(topic: str) -> str:
    return topic + DLQ_SUFFIX


# Which services consume each topic (a service's consumer group is its name after the topic prefix). Part of
# the contract: the outbox counts a published event safe from broker loss only once all of them have it.
CONSUMERS: dict[Topic, frozenset[str]] = {
    Topic.INCIDENTS_REPORTED: frozenset({"triage", "audit"}),
    Topic.INCIDENTS_TRIAGED: frozenset({"intake", "audit"}),
    Topic.NOTIFICATIONS_REQUESTED: frozenset({"notify", "intake", "audit"}),
    Topic.NOTIFICATIONS_DELIVERED: frozenset({"intake", "audit"}),
    Topic.NOTIFICATIONS_FAILED: frozenset({"triage", "intake", "audit"}),
    Topic.NOTIFICATIONS_WITHHELD: frozenset({"audit"}),
    Topic.INCIDENTS_ACKNOWLEDGED: frozenset({"triage", "notify", "intake", "audit"}),
    Topic.INCIDENTS_ESCALATED: frozenset({"intake", "audit"}),
    Topic.INCIDENTS_ACTIONS: frozenset({"triage", "intake", "audit"}),
}
DEAD_LETTER_CONSUMERS = frozenset({"audit"})


def consumers_of(logical: str) -> frozenset[str]:
    """The services that consume a logical topic; dead-letter topics are kept by audit alone."""
    if logical.endswith(DLQ_SUFFIX):
        return DEAD_LETTER_CONSUMERS
    try:
        return CONSUMERS[Topic(logical)]
    except ValueError:
        return frozenset()


def all_topic_names() -> list[str]:
    """Every topic the product uses, dead-letter topics included."""
    names = [t.value for t in Topic]
    return names + [dead_letter_topic(n) for n in names]


class TopicNames:
    """Maps logical topic names to physical ones; a prefix keeps test runs and tenants apart on one broker."""

    def __init__(self, prefix: str = "") -> None:
        self.prefix = prefix

    def physical(self, logical: str) -> str:
        return self.prefix + logical

    def logical(self, physical: str) -> str:
        if self.prefix and physical.startswith(self.prefix):
            return physical[len(self.prefix) :]
        return physical

    def all(self) -> list[str]:
        return [self.physical(n) for n in all_topic_names()]
