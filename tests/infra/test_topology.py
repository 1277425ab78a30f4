"""The contract's list of who consumes each topic matches what the services really consume.

The outbox's re-drive counts an event safe from broker loss only once every consumer listed in
`common.topics.CONSUMERS` has committed past it: a service consuming a topic it is not listed for
could lose events when the broker forgets. This test keeps the list and the code in step.
"""

from __future__ import annotations

from datetime import timedelta

from audit.store import raw_handlers as audit_handlers
from common.events import utc_now
from common.topics import all_topic_names, consumers_of
from intake.projection import handlers as intake_handlers
from notify.config import NotifySettings
from notify.main import build as build_notify
from triage.config import TriageSettings
from triage.consumer import TriageHandlers


def test_every_topic_lists_exactly_the_services_that_consume_it():
    triage = TriageHandlers(TriageSettings().load_policies(), utc_now, reminder_min_period=timedelta(minutes=1))
    consumed = {
        "intake": set(intake_handlers()),
        "triage": set(triage.handlers()),
        "notify": set(build_notify(NotifySettings()).runtime.spec.handlers),
        "audit": set(audit_handlers()),
    }
    for topic in all_topic_names():
        actual = {service for service, topics in consumed.items() if topic in topics}
        assert consumers_of(topic) == actual, topic
