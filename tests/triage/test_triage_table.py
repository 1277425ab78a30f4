"""Realistic reports from the seeds' situations: class, first people told and reminders carried."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pytest

from common.contracts import IncidentClass
from triage.classify import classify
from triage.escalation import plan_escalation
from triage.policy import SchoolPolicy

from .builders import build_report, pupil, staff

ILLEGAL = IncidentClass.ILLEGAL
SEXTING = IncidentClass.YOUTH_PRODUCED_SEXUAL_IMAGERY
STAFF = IncidentClass.ALLEGATION_ABOUT_STAFF
INAPPROPRIATE = IncidentClass.INAPPROPRIATE
SECURITY = IncidentClass.SECURITY

POLICE = {"refer_police", "do_not_view_copy_share_delete", "secure_and_isolate_device", "preserve_evidence"}
DSL_REVIEW = {"do_not_view_copy_share_delete", "initial_review_meeting", "assess_risk_questions", "inform_parents"}
LADO = {"refer_lado", "do_not_investigate_alone"}
HEAD_AND_DSL = {"headteacher", "dsl"}
COORDINATOR_AND_DSL = {"online_safety_coordinator", "dsl"}


@dataclass(frozen=True)
class Case:
    name: str
    category: str
    description: str
    expected_class: IncidentClass
    first_told: set[str]
    reminders: set[str]
    subjects: list[dict[str, Any]] = field(default_factory=list)
    immediate_risk: bool = False


CASES = [
    Case(
        "csam found on a staff laptop",
        "child_sexual_abuse_imagery",
        "During a routine check the IT technician found child sexual abuse images on a staff laptop.",
        ILLEGAL,
        HEAD_AND_DSL,
        POLICE | {"refer_iwf", "refer_lado_at_once"},  # on school equipment: the Designated Officer at once
        [staff()],
    ),
    Case(
        "year 6 pupil shares a nude in the class group chat",
        "youth_produced_sexual_imagery",
        "A pupil shared a nude selfie in the class group chat last night.",
        SEXTING,
        {"dsl"},
        DSL_REVIEW | {"refer_at_once", "refer_report_remove"},
        [pupil("Year 6")],
    ),
    Case(
        "pupil accidentally reaches a gambling site",
        "inappropriate_access_accidental",
        "During a lesson a pupil clicked an advert and reached an online gambling site; the screen was closed.",
        INAPPROPRIATE,
        COORDINATOR_AND_DSL,
        {"refer_filtering_provider"},
        [pupil("Year 4")],
    ),
    Case(
        "teacher friends a pupil",
        "staff_contact_outside_agreed_channels",
        "A teacher sent a friend request to a Year 10 pupil on Instagram from a personal account.",
        STAFF,
        {"headteacher"},
        LADO,
        [staff()],
    ),
    Case(
        "unencrypted laptop with pupil records lost",
        "lost_or_stolen_equipment",
        "A teacher's unencrypted school laptop holding pupil records was left on a train.",
        SECURITY,
        {"headteacher"},
        {"check_personal_data_on_device", "refer_data_protection_officer", "notify_ico"},
        [staff()],
    ),
    Case(
        "virus warning on the office pc",
        "virus",
        "An anti-virus warning appeared on the office PC after an email attachment was opened.",
        SECURITY,
        {"it_technician", "it_support_provider"},
        {"stop_using_device"},
    ),
    Case(
        "offensive inbound email",
        "offensive_email",
        "Staff received an offensive email with explicit language from an unknown sender.",
        INAPPROPRIATE,
        COORDINATOR_AND_DSL,
        {"report_offensive_email_before_deleting"},
    ),
    Case(
        "headteacher accused",
        "allegation_about_staff",
        "A parent alleges the headteacher has been messaging pupils from a personal phone.",
        STAFF,
        {"chair_of_governors"},
        LADO,
        [staff("Head Teacher")],
    ),
    Case(
        "extremist content watched in the library",
        "terrorist_or_extremist_content",
        "A pupil was found watching far-right extremist propaganda videos in the library.",
        ILLEGAL,
        HEAD_AND_DSL,
        POLICE | {"refer_prevent"},
        [pupil()],
    ),
    Case(
        "under-13 sexting on snapchat",
        "youth_produced_sexual_imagery",
        "A 12-year-old sent a semi-nude picture to a classmate on Snapchat.",
        SEXTING,
        {"dsl"},
        DSL_REVIEW | {"refer_at_once", "refer_report_remove"},
        [pupil("Year 8", age=12)],
    ),
    Case(
        "sexting in Year 8, no age given: any of them may be 12",
        "youth_produced_sexual_imagery",
        "A pupil sent a nude photo of herself to a classmate.",
        SEXTING,
        {"dsl"},
        DSL_REVIEW | {"refer_at_once"},
        [pupil("Year 8")],
    ),
    Case(
        "sexting in Year 9, no age given: 13 or more",
        "youth_produced_sexual_imagery",
        "A pupil sent a nude photo of herself to a classmate.",
        SEXTING,
        {"dsl"},
        DSL_REVIEW,
        [pupil("Year 9")],
    ),
    Case(
        "blackmail over a nude photo",
        "youth_produced_sexual_imagery",
        "The pupil is being blackmailed: a boy at another school threatens to share her nude photo "
        "unless she sends more.",
        SEXTING,
        {"dsl"},
        DSL_REVIEW | {"refer_at_once"},
        [pupil("Year 10")],
    ),
    Case(
        "non-photographic abuse images on the network",
        "child_sexual_abuse_imagery",
        "Non-photographic child sexual abuse images (drawings) were found in a shared folder.",
        ILLEGAL,
        HEAD_AND_DSL,
        POLICE | {"refer_iwf", "refer_lado_at_once"},  # the school's network is its equipment (000 Part Four 26)
    ),
    Case(
        "criminally obscene adult content",
        "criminally_obscene_content",
        "Criminally obscene adult videos were found on a USB stick handed in at reception.",
        ILLEGAL,
        HEAD_AND_DSL,
        POLICE,
    ),
    Case(
        "incitement to racial hatred forwarded",
        "incitement_to_racial_hatred",
        "A pupil forwarded a post inciting racial hatred to the year group chat.",
        ILLEGAL,
        HEAD_AND_DSL,
        POLICE,
        [pupil()],
    ),
    Case(
        "online grooming in a game",
        "online_grooming",
        "A man the pupil met in an online game asked her to keep their chats secret and to meet him at the weekend.",
        ILLEGAL,
        HEAD_AND_DSL,
        POLICE | {"refer_ceop", "refer_childrens_social_care"},
        [pupil("Year 8")],
    ),
    Case(
        "cyberbullying report that speaks of an adult asking to meet",
        "cyberbullying",
        "An adult on a gaming site has been messaging the pupil and asked her to meet him after school.",
        ILLEGAL,
        HEAD_AND_DSL,
        POLICE | {"keep_evidence", "refer_ceop", "refer_childrens_social_care"},
        [pupil("Year 7")],
    ),
    Case(
        "cyberbullying in a group chat",
        "cyberbullying",
        "Pupils have been posting unkind comments about a classmate in a group chat after school.",
        INAPPROPRIATE,
        {"headteacher"},
        {"keep_evidence"},
        [pupil("Year 5")],
    ),
    Case(
        "cyberbullying report that speaks of a naked photo being shared",
        "cyberbullying",
        "Other pupils are sharing a naked photo of the girl around the year group.",
        SEXTING,
        {"dsl"},
        DSL_REVIEW | {"keep_evidence"},
        [pupil("Year 9")],
    ),
    Case(
        "pupil bypasses the filter with a vpn",
        "inappropriate_access_deliberate",
        "A pupil used a VPN to bypass the filter and watched violent videos.",
        INAPPROPRIATE,
        {"it_technician", "headteacher"},
        {"log_deliberate_access", "investigate_deliberate_access", "refer_filtering_provider"},
        [pupil("Year 6")],
    ),
    Case(
        "accidental access that the text shows was deliberate",
        "inappropriate_access_accidental",
        "A pupil deliberately typed a rude search and reached an adult site.",
        INAPPROPRIATE,
        {"it_technician", "headteacher"},
        {"refer_filtering_provider", "log_deliberate_access", "investigate_deliberate_access"},
        [pupil("Year 6")],
    ),
    Case(
        "teacher accesses pornography on a school laptop",
        "adult_pornography_on_work_equipment",
        "The filtering log shows a teacher accessed pornography on a school laptop in the staff room.",
        STAFF,
        {"headteacher"},
        LADO | {"secure_and_isolate_device"},
        [staff()],
    ),
    Case(
        "teacher visits gambling sites in lessons",
        "inappropriate_access_deliberate",
        "A teacher repeatedly visited gambling websites during lessons on the classroom computer.",
        STAFF,
        {"headteacher"},
        LADO | {"log_deliberate_access", "investigate_deliberate_access", "refer_filtering_provider"},
        [staff()],
    ),
    Case(
        "server room left open",
        "security_breach",
        "The server room door was found propped open with the admin password on a sticky note.",
        SECURITY,
        {"headteacher"},
        set(),
    ),
    Case(
        "hacked staff email account",
        "compromised_account",
        "A teacher's email account was hacked and sent phishing messages to parents.",
        SECURITY,
        {"headteacher"},
        {"reset_account"},
        [staff()],
    ),
    Case(
        "spreadsheet sent to the wrong parent",
        "personal_data_lost",
        "A spreadsheet with names and addresses of pupils was emailed to the wrong parent.",
        SECURITY,
        {"headteacher"},
        {"refer_data_protection_officer", "notify_ico"},
    ),
    Case(
        "class ipad stolen",
        "lost_or_stolen_equipment",
        "A class iPad was stolen from the classroom over the weekend.",
        SECURITY,
        {"headteacher"},
        {"check_personal_data_on_device"},
    ),
    Case(
        "parent posts derogatory comments",
        "derogatory_post",
        "A parent posted derogatory comments about a teacher on a community Facebook page.",
        INAPPROPRIATE,
        COORDINATOR_AND_DSL,
        {"keep_evidence"},
        [{"kind": "parent"}],
    ),
    Case(
        "teaching assistant mocks pupils online",
        "derogatory_post",
        "A teaching assistant posted mocking comments about pupils on a personal social media account.",
        STAFF,
        {"headteacher"},
        LADO | {"keep_evidence"},
        [staff("teaching assistant")],
    ),
    Case(
        "sexual comments sent to a girl",
        "sexual_harassment_online",
        "Boys in Year 10 have been sending sexual comments to a girl on Instagram.",
        INAPPROPRIATE,
        COORDINATOR_AND_DSL,
        {"keep_evidence"},
        [pupil("Year 10")],
    ),
    Case(
        "unsolicited explicit images sent to girls",
        "sexual_harassment_online",
        "A boy sent unsolicited dick pics to several girls in Year 11.",
        SEXTING,
        {"dsl"},
        DSL_REVIEW | {"keep_evidence"},
        [pupil("Year 11")],
    ),
    Case(
        "child at immediate risk after bullying",
        "cyberbullying",
        "After months of abuse in a group chat the pupil posted that she wants to end her life.",
        INAPPROPRIATE,
        {"headteacher", "dsl"},
        {"keep_evidence", "refer_at_once"},
        [pupil("Year 8")],
        True,
    ),
    Case(
        "talk of self-harm raises immediate risk",
        "other",
        "A pupil told a friend in a chat that he wants to self-harm tonight.",
        INAPPROPRIATE,
        {"online_safety_coordinator", "dsl", "headteacher"},
        {"refer_at_once"},
        [pupil()],
    ),
    Case(
        "illegal category with harmless text stays illegal",
        "child_sexual_abuse_imagery",
        "Reported by IT; see the safeguarding record.",
        ILLEGAL,
        HEAD_AND_DSL,
        POLICE | {"refer_iwf"},
    ),
    Case(
        "adult solicits nude photos from a pupil",
        "youth_produced_sexual_imagery",
        "A 24-year-old man persuaded a Year 10 pupil to send him nude photos over Snapchat.",
        ILLEGAL,
        HEAD_AND_DSL,
        POLICE | {"refer_ceop", "refer_childrens_social_care"},
        [pupil("Year 10")],
    ),
    Case(
        "sexting where a pupil has special educational needs",
        "youth_produced_sexual_imagery",
        "Two pupils exchanged nude images in the park.",
        SEXTING,
        {"dsl"},
        DSL_REVIEW | {"refer_at_once"},
        [pupil("Year 10", special_educational_needs=True)],
    ),
    Case(
        "sexting that the text says involves an EHCP",
        "youth_produced_sexual_imagery",
        "Two pupils exchanged nude images; one has an EHCP.",
        SEXTING,
        {"dsl"},
        DSL_REVIEW | {"refer_at_once"},
        [pupil("Year 10")],
    ),
    Case(
        "consensual exchange between older pupils",
        "youth_produced_sexual_imagery",
        "Two pupils in a relationship exchanged nude images; both say it was consensual and they were deleted.",
        SEXTING,
        {"dsl"},
        DSL_REVIEW,
        [pupil("Year 11", age=16)],
    ),
    Case(
        "imagery of a violent act",
        "youth_produced_sexual_imagery",
        "A video of a sexual assault involving a pupil is circulating among students.",
        SEXTING,
        {"dsl"},
        DSL_REVIEW | {"refer_at_once"},
        [pupil("Year 10")],
    ),
    Case(
        "teacher asks a pupil for images",
        "youth_produced_sexual_imagery",
        "A pupil says a teacher asked her for photos of herself in her underwear.",
        ILLEGAL,
        HEAD_AND_DSL,
        POLICE | {"refer_lado", "refer_childrens_social_care", "refer_at_once"},
        [staff(), pupil("Year 9")],
    ),
    Case(
        "teacher messages a pupil on whatsapp",
        "other",
        "A teacher has been messaging a Year 8 pupil on WhatsApp late at night.",
        STAFF,
        {"headteacher"},
        LADO,
        [staff()],
    ),
    Case(
        "dsl accepts a pupil's friend request",
        "other",
        "The designated safeguarding lead accepted a friend request from a pupil.",
        STAFF,
        {"headteacher"},
        LADO,
        [staff("Designated Safeguarding Lead")],
    ),
    Case(
        "indecent images on the dsl's school laptop",
        "child_sexual_abuse_imagery",
        "Indecent images of children were found on a school laptop used by the DSL.",
        ILLEGAL,
        {"headteacher", "deputy_dsl"},
        POLICE | {"refer_iwf", "refer_lado_at_once"},
        [staff("DSL")],
    ),
    Case(
        "ransomware encrypts the shared drive",
        "security_breach",
        "Files on the shared drive were encrypted by ransomware overnight.",
        SECURITY,
        {"it_technician", "it_support_provider"},
        {"stop_using_device"},
    ),
    Case(
        "stranger grooming a young child",
        "other",
        "A stranger on a game chat told the child to keep it a secret and sent gifts.",
        ILLEGAL,
        HEAD_AND_DSL,
        POLICE | {"refer_ceop", "refer_childrens_social_care"},
        [pupil("Year 5", age=9)],
    ),
    Case(
        "sextortion of a pupil",
        "other",
        "The pupil is a victim of sextortion: someone online demands money.",
        ILLEGAL,
        HEAD_AND_DSL,
        POLICE | {"refer_ceop", "refer_childrens_social_care"},
        [pupil("Year 10")],
    ),
    Case(
        "indecent images arrive by email",
        "offensive_email",
        "An email to the office contained what appear to be indecent images of children.",
        ILLEGAL,
        HEAD_AND_DSL,
        POLICE | {"refer_iwf", "report_offensive_email_before_deleting"},
    ),
    Case(
        "visitor photographs pupils",
        "other",
        "A visitor was seen photographing pupils in the playground.",
        INAPPROPRIATE,
        COORDINATOR_AND_DSL,
        set(),
        [{"kind": "visitor"}],
    ),
    Case(
        "loot boxes bought on a school tablet",
        "inappropriate_access_accidental",
        "A pupil spent money on loot boxes in a game on a school tablet.",
        INAPPROPRIATE,
        COORDINATOR_AND_DSL,
        {"refer_filtering_provider"},
        [pupil("Year 5")],
    ),
    Case(
        "neo-nazi memes in a group chat",
        "derogatory_post",
        "A pupil shared neo-Nazi memes about a classmate in a group chat.",
        INAPPROPRIATE,
        COORDINATOR_AND_DSL,
        {"keep_evidence", "refer_prevent"},
        [pupil()],
    ),
    Case(
        "terrorist video shared under 'other'",
        "other",
        "A pupil shared a beheading video from a terrorist channel.",
        ILLEGAL,
        HEAD_AND_DSL,
        POLICE | {"refer_prevent", "refer_childrens_social_care"},
        [pupil()],
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_report_is_classed_told_and_reminded_as_the_school_procedure_says(case: Case, policy: SchoolPolicy) -> None:
    report = build_report(
        case.category, case.description, case.subjects or None, child_at_immediate_risk=case.immediate_risk
    )
    classification = classify(report)
    plan = plan_escalation(report, classification, policy, datetime(2025, 1, 10, 14, 30, tzinfo=UTC))

    assert classification.incident_class == case.expected_class, classification.rule_ids
    assert {n.recipient.role for n in plan.first_notices} == case.first_told, classification.rule_ids
    assert {r.code for r in plan.reminders} == case.reminders, classification.rule_ids


def test_the_table_covers_at_least_forty_realistic_reports() -> None:
    assert len(CASES) >= 40
    assert len({c.name for c in CASES}) == len(CASES)
