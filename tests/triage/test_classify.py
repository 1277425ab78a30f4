"""Classification: the reporter's category is the floor; subject, flag and free text only ever raise it."""

from __future__ import annotations

import pytest

from common.contracts import IncidentClass, Urgency
from common.incident import Category
from triage.classify import classify
from triage.rules import CLASS_SEVERITY, URGENCY_SEVERITY

from .builders import build_report, pupil, staff

DESIGN_TABLE = {
    Category.CHILD_SEXUAL_ABUSE_IMAGERY: IncidentClass.ILLEGAL,
    Category.CRIMINALLY_OBSCENE_CONTENT: IncidentClass.ILLEGAL,
    Category.INCITEMENT_TO_RACIAL_HATRED: IncidentClass.ILLEGAL,
    Category.TERRORIST_OR_EXTREMIST_CONTENT: IncidentClass.ILLEGAL,
    Category.ONLINE_GROOMING: IncidentClass.ILLEGAL,
    Category.YOUTH_PRODUCED_SEXUAL_IMAGERY: IncidentClass.YOUTH_PRODUCED_SEXUAL_IMAGERY,
    Category.ALLEGATION_ABOUT_STAFF: IncidentClass.ALLEGATION_ABOUT_STAFF,
    Category.STAFF_CONTACT_OUTSIDE_AGREED_CHANNELS: IncidentClass.ALLEGATION_ABOUT_STAFF,
    Category.ADULT_PORNOGRAPHY_ON_WORK_EQUIPMENT: IncidentClass.ALLEGATION_ABOUT_STAFF,
    Category.INAPPROPRIATE_ACCESS_ACCIDENTAL: IncidentClass.INAPPROPRIATE,
    Category.INAPPROPRIATE_ACCESS_DELIBERATE: IncidentClass.INAPPROPRIATE,
    Category.CYBERBULLYING: IncidentClass.INAPPROPRIATE,
    Category.OFFENSIVE_EMAIL: IncidentClass.INAPPROPRIATE,
    Category.DEROGATORY_POST: IncidentClass.INAPPROPRIATE,
    Category.SEXUAL_HARASSMENT_ONLINE: IncidentClass.INAPPROPRIATE,
    Category.SECURITY_BREACH: IncidentClass.SECURITY,
    Category.LOST_OR_STOLEN_EQUIPMENT: IncidentClass.SECURITY,
    Category.PERSONAL_DATA_LOST: IncidentClass.SECURITY,
    Category.VIRUS: IncidentClass.SECURITY,
    Category.COMPROMISED_ACCOUNT: IncidentClass.SECURITY,
    Category.OTHER: IncidentClass.INAPPROPRIATE,
}
HARMLESS = "Logged for the record; see the school's safeguarding system."
RAISING_TEXTS = [
    HARMLESS,
    "Someone said it was only a mistake and nothing happened.",
    "A naked photo of a pupil was shared in a group chat.",
    "An adult asked the child to meet him after school.",
    "The laptop holds unencrypted pupil records.",
    "The pupil said they want to self-harm.",
    "A virus warning popped up.",
]


def test_every_category_maps_to_its_class_in_the_design_table() -> None:
    assert set(DESIGN_TABLE) == set(Category)
    for category, expected in DESIGN_TABLE.items():
        classification = classify(build_report(category.value, HARMLESS))
        assert classification.incident_class == expected, category
        assert classification.reasons[0].rule.startswith("category."), category


def test_an_illegal_report_with_harmless_text_stays_illegal_and_immediate() -> None:
    report = build_report("child_sexual_abuse_imagery", "Pupil says it was only a cartoon and a joke, nothing serious.")
    classification = classify(report)
    assert classification.incident_class == IncidentClass.ILLEGAL
    assert classification.urgency == Urgency.IMMEDIATE


@pytest.mark.parametrize("category", list(Category))
@pytest.mark.parametrize("description", RAISING_TEXTS)
def test_free_text_never_lowers_class_or_urgency_below_the_category(category: Category, description: str) -> None:
    floor = classify(build_report(category.value, HARMLESS, [pupil()]))
    raised = classify(build_report(category.value, description, [pupil()]))
    assert CLASS_SEVERITY.index(raised.incident_class) <= CLASS_SEVERITY.index(floor.incident_class)
    assert URGENCY_SEVERITY.index(raised.urgency) <= URGENCY_SEVERITY.index(floor.urgency)
    assert set(floor.reminder_codes) <= set(raised.reminder_codes)


def test_cyberbullying_that_speaks_of_a_shared_naked_photo_becomes_youth_produced_imagery() -> None:
    report = build_report("cyberbullying", "Pupils are sharing a naked photo of a classmate.", [pupil()])
    classification = classify(report)
    assert classification.incident_class == IncidentClass.YOUTH_PRODUCED_SEXUAL_IMAGERY
    assert "text.nude-image-of-pupil" in classification.rule_ids


def test_cyberbullying_that_speaks_of_an_adult_asking_to_meet_is_illegal_contact_for_ceop() -> None:
    report = build_report("cyberbullying", "An adult on a game asked the pupil to meet him in the park.", [pupil()])
    classification = classify(report)
    assert classification.incident_class == IncidentClass.ILLEGAL
    assert classification.risk_area.value == "contact"
    assert "refer_ceop" in classification.reminder_codes
    assert "text.adult-seeking-contact" in classification.rule_ids


def test_words_inside_other_words_do_not_fire_a_rule() -> None:
    classification = classify(build_report("other", "The denuded hillside in the geography video.", [pupil()]))
    assert classification.incident_class == IncidentClass.INAPPROPRIATE
    assert classification.rule_ids == ("category.other",)


def test_immediate_risk_flag_makes_urgency_immediate_whatever_the_category() -> None:
    report = build_report("virus", "A virus warning popped up.", child_at_immediate_risk=True)
    classification = classify(report)
    assert classification.urgency == Urgency.IMMEDIATE
    assert classification.child_at_immediate_risk
    assert "refer_at_once" in classification.reminder_codes


def test_a_staff_subject_raises_misconduct_to_an_allegation_but_not_a_lost_laptop() -> None:
    conduct = classify(build_report("derogatory_post", "Posted about a colleague.", [staff()]))
    lost = classify(build_report("lost_or_stolen_equipment", "Left a laptop on the bus.", [staff()]))
    assert conduct.incident_class == IncidentClass.ALLEGATION_ABOUT_STAFF
    assert lost.incident_class == IncidentClass.SECURITY


def test_a_headteacher_subject_stands_aside_and_raises_urgency() -> None:
    report = build_report("allegation_about_staff", HARMLESS, [staff("Headteacher")])
    classification = classify(report)
    assert classification.roles_standing_aside == ("headteacher",)
    assert classification.urgency == Urgency.HIGH
    assert "subject.headteacher" in classification.rule_ids


def test_under_13_is_known_from_age_date_of_birth_or_year_group() -> None:
    for subject in (pupil("Year 6"), pupil("Year 9", age=12), pupil("", date_of_birth="2013-03-01T00:00:00Z")):
        report = build_report("youth_produced_sexual_imagery", "Nude image exchanged.", [subject])
        assert "refer_at_once" in classify(report).reminder_codes, subject
    older = build_report("youth_produced_sexual_imagery", "Nude image exchanged.", [pupil("Year 10")])
    assert "refer_at_once" not in classify(older).reminder_codes


def test_every_reason_names_the_rule_that_fired() -> None:
    classification = classify(build_report("youth_produced_sexual_imagery", "Year 5 blackmail.", [pupil()]))
    assert classification.rule_ids[0] == "category.youth-produced-imagery"
    assert {"ukcis.coercion", "ukcis.under-13-text"} <= set(classification.rule_ids)
    assert all(reason.explanation for reason in classification.reasons)
