"""What a notified person reads: subject, SMS, email body and webhook payload (notify.messages)."""

from __future__ import annotations

import datetime as dt
import json

import pytest

from common.contracts import IncidentClass, Reminder, Urgency
from common.incident import Category, IncidentReport, Reporter, RiskArea, Subject, SubjectKind
from notify import sms
from notify.messages import ForbiddenContent, Links, ack_url, forbidden_terms, render, render_digest

PUPIL_NAME = "Amelia Hartley-Jones"
PUPIL_DOB = dt.date(2014, 3, 7)
LINKS = Links(
    acknowledge=ack_url("https://safety.oakfield.example", "AQIBZ8a0" + "x" * 118),
    incident="https://safety.oakfield.example/incidents/0b7e8f90",
)

# The report the request came from: the pupil's name, DOB and the description live here, not in the request.
REPORT = IncidentReport(
    school_id="school-a",
    reporter=Reporter(role="class teacher"),
    occurred_at=dt.datetime(2025, 3, 4, 9, 0, tzinfo=dt.UTC),
    where="ICT suite",
    category=Category.CHILD_SEXUAL_ABUSE_IMAGERY,
    risk_area=RiskArea.CONTENT,
    subjects=[
        Subject(kind=SubjectKind.PUPIL, name=PUPIL_NAME, date_of_birth=dt.datetime(2014, 3, 7), year_group="Year 5")
    ],
    description=f"{PUPIL_NAME} was shown images on a school laptop by an older pupil.",
)
FORBIDDEN = forbidden_terms(names=[PUPIL_NAME], dates_of_birth=[PUPIL_DOB], other=[REPORT.description])


def all_text(message) -> dict[str, str]:
    return {
        "subject": message.subject,
        "sms": message.sms_text,
        "email": message.email_body,
        "webhook": json.dumps(message.webhook_payload, ensure_ascii=False),
    }


def test_every_form_carries_school_reference_class_urgency_and_the_ack_link(make_request):
    message = render(make_request(), LINKS)
    assert message.subject == "IMMEDIATE ACTION: illegal content, incident OSI-7K2QF at Oakfield Primary School"
    for name, text in all_text(message).items():
        assert "Oakfield Primary School" in text, name
        assert "OSI-7K2QF" in text, name
        assert LINKS.acknowledge in text or name == "subject", name
    assert "illegal content" in message.sms_text and "IMMEDIATE" in message.sms_text
    assert "Class: illegal content" in message.email_body and "Urgency: immediate" in message.email_body


def test_reminders_reach_the_email_with_due_times_in_uk_time_and_the_first_reach_the_sms(make_request):
    message = render(make_request(), LINKS)
    assert "Do not view, copy, share or delete the imagery." in message.sms_text
    assert "Refer to the police, CEOP and the IWF." in message.sms_text
    assert "Refer to the police, CEOP and the IWF. (for the dsl; by 10:30 on Tue 4 Mar 2025 (UK time))" in (
        message.email_body
    )
    assert LINKS.incident in message.email_body


def test_the_message_id_is_the_notification_id(make_request):
    message = render(make_request(), LINKS)
    assert message.message_id == "6f1c2a7e-3b9d-4c55-9e0a-1d2b3c4d5e6f"
    assert message.email_message_id("alerts.example") == "<6f1c2a7e-3b9d-4c55-9e0a-1d2b3c4d5e6f@alerts.example>"
    assert message.webhook_payload["id"] == message.message_id


def test_webhook_payload_is_structured(make_request):
    item = render(make_request(), LINKS).webhook_payload["notifications"][0]
    assert item["incident_class"] == "illegal" and item["urgency"] == "immediate"
    assert item["acknowledge_url"] == LINKS.acknowledge
    assert item["recipient_role"] == "dsl"
    assert item["reminders"][1]["due_at"] == "2025-03-04T10:30:00Z"


@pytest.mark.parametrize("cls", list(IncidentClass))
def test_no_pupil_name_dob_or_description_in_any_subject_or_sms(make_request, cls):
    message = render(make_request(incident_class=cls), LINKS, forbidden=FORBIDDEN)
    for text in all_text(message).values():
        assert "Amelia" not in text and "Hartley" not in text
        assert "2014" not in text and "07/03" not in text
        assert "laptop" not in text


def test_rendering_refuses_a_message_that_would_carry_a_pupils_name_and_does_not_repeat_it(make_request):
    leaky = make_request(
        reminders=[Reminder(code="x", text=f"Speak to {PUPIL_NAME.upper()}'s parents", owner_role="dsl")]
    )
    with pytest.raises(ForbiddenContent) as caught:
        render(leaky, LINKS, forbidden=FORBIDDEN)
    assert "Amelia" not in str(caught.value)


def test_rendering_refuses_a_date_of_birth_written_the_british_way(make_request):
    leaky = make_request(reason="pupil born 7 March 2014")
    with pytest.raises(ForbiddenContent, match="email body"):
        render(leaky, LINKS, forbidden=FORBIDDEN)


def test_a_short_forbidden_term_cannot_block_every_alert(make_request):
    render(make_request(), LINKS, forbidden=["Al", "", " "])


def test_sms_stays_within_three_gsm_fragments_however_many_reminders(make_request):
    reminders = [
        Reminder(code=f"r{i}", text=f"Step {i}: " + "record what was done and by whom " * 3, owner_role="dsl")
        for i in range(12)
    ]
    text = render(make_request(reminders=reminders), LINKS).sms_text
    assert sms.length(text) <= sms.MAX_LENGTH == 459
    assert sms.fragments(text) <= 3
    assert LINKS.acknowledge in text
    assert text.endswith("more steps)")


def test_a_long_first_reminder_is_cut_rather_than_left_out(make_request):
    reminders = [Reminder(code="r", text="Refer to the police at once. " * 20, owner_role="dsl")]
    text = render(make_request(reminders=reminders), LINKS).sms_text
    assert "Refer to the police at once." in text and text.endswith("...")
    assert sms.length(text) <= 459


def test_sms_text_is_folded_into_the_gsm_alphabet(make_request):
    text = render(make_request(school_name="St Mary\u2019s \u2013 Ysgol Ll\u0175yn"), LINKS).sms_text
    assert "St Mary's - Ysgol Llwyn" in text
    assert text == sms.to_gsm(text)


def test_digest_lists_every_incident_with_its_own_link_most_urgent_first(make_request):
    low = make_request(
        notification_id="n-2", reference="OSI-22222", incident_class=IncidentClass.INAPPROPRIATE, urgency=Urgency.LOW
    )
    high = make_request(
        notification_id="n-1", reference="OSI-11111", incident_class=IncidentClass.SECURITY, urgency=Urgency.HIGH
    )
    links = [Links(acknowledge=ack_url("https://s.example", "tok-low")), Links(ack_url("https://s.example", "tok-hi"))]
    message = render_digest([(low, links[0]), (high, links[1])])
    assert message.subject == "URGENT: 2 online-safety incidents at Oakfield Primary School"
    assert message.notification_ids == ("n-1", "n-2")
    assert message.email_body.index("OSI-11111") < message.email_body.index("OSI-22222")
    assert "https://s.example/ack/tok-low" in message.email_body and "https://s.example/ack/tok-hi" in message.sms_text
    assert [n["reference"] for n in message.webhook_payload["notifications"]] == ["OSI-11111", "OSI-22222"]
    again = render_digest([(high, links[1]), (low, links[0])])
    assert again.message_id == message.message_id and message.message_id.startswith("digest-")


def test_a_burst_of_routine_notices_to_one_phone_is_one_sms_with_the_links_that_fit(make_request):
    """The throttle groups up to 20 routine SMS to one phone in a window. Three fragments hold about two one-time
    links: the most urgent go in, and the SMS says how many more there are and where their links are."""
    items = []
    for n in range(20):
        request = make_request(notification_id=f"n-{n:02d}", reference=f"OSI-{n:05d}",
                               incident_class=IncidentClass.INAPPROPRIATE,
                               urgency=Urgency.HIGH if n == 7 else Urgency.NORMAL)
        items.append((request, Links(acknowledge=ack_url("https://s.example", f"tok-{n:02d}-" + "x" * 80))))
    text = render_digest(items).sms_text
    assert sms.length(text) <= sms.MAX_LENGTH and text == sms.to_gsm(text)
    assert text.startswith("URGENT: 20 online-safety incidents at Oakfield Primary School.")
    shown = sorted((text.index(f"tok-{n:02d}-"), n) for n in range(20) if f"tok-{n:02d}-" in text)
    assert shown[0][1] == 7  # the most urgent first
    assert text.endswith(f"(+{20 - len(shown)} more incidents, each with its link in your email)")


def test_each_form_is_rendered_when_first_read_so_an_impossible_sms_fails_only_the_sms(make_request):
    link = "https://s.example/ack/" + "x" * 600  # no SMS of three fragments can hold it
    message = render(make_request(), Links(acknowledge=link))
    assert link in message.email_body and message.email_body is message.email_body
    assert message.webhook_payload["notifications"][0]["acknowledge_url"] == link
    with pytest.raises(ValueError, match="too long for an SMS"):
        _ = message.sms_text
