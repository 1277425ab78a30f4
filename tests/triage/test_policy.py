"""School policies: the default loads with a stable hash; a mistake is refused naming file, line and path."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from triage.policy import DEFAULT_POLICY_FILE, PolicyError, load_policies, load_policy

DEFAULT_TEXT = DEFAULT_POLICY_FILE.read_text(encoding="utf-8")


def policy_file(tmp_path: Path, old: str, new: str, name: str = "school-b.yaml") -> tuple[Path, int]:
    """The default policy with one edit; returns the file and the (1-based) line of the edit."""
    assert DEFAULT_TEXT.count(old) >= 1, old
    text = DEFAULT_TEXT.replace(old, new, 1)
    file = tmp_path / name
    file.write_text(text, encoding="utf-8")
    line = text[: text.index(new)].count("\n") + 1 if new else 1
    return file, line


def refusal(file: Path) -> str:
    with pytest.raises(PolicyError) as refused:
        load_policy(file)
    return str(refused.value)


def test_the_default_policy_loads_and_its_version_is_the_sha256_of_its_bytes() -> None:
    policy = load_policy(DEFAULT_POLICY_FILE)
    expected = "sha256:" + hashlib.sha256(DEFAULT_POLICY_FILE.read_bytes()).hexdigest()
    assert policy.version == expected
    assert load_policy(DEFAULT_POLICY_FILE).version == expected
    assert policy.chains.illegal.levels[0].roles == ("headteacher", "dsl")


def test_the_default_policy_follows_the_design_table() -> None:
    policy = load_policy(DEFAULT_POLICY_FILE)
    illegal = [level.roles for level in policy.chains.illegal.levels]
    assert illegal == [("headteacher", "dsl"), ("deputy_dsl",), ("chair_of_governors",)]
    assert policy.chains.youth_produced_sexual_imagery.levels[0].roles == ("dsl",)
    assert policy.chains.allegation_about_staff.levels[0].roles == ("headteacher",)
    assert policy.stand_ins["headteacher"] == "chair_of_governors"
    assert policy.reminders["notify_ico"].due is not None and policy.reminders["notify_ico"].due.hours == 72
    assert policy.reminders["refer_lado"].due is not None and policy.reminders["refer_lado"].due.working_days == 1
    for contact in policy.contacts.values():
        for channel in contact.channels:  # reserved example domains; Ofcom's drama range for SMS
            assert ".example" in channel.address or channel.address.startswith("+447700900")


def test_a_one_byte_edit_changes_the_version(tmp_path: Path) -> None:
    file, _ = policy_file(tmp_path, "school_name: Example Primary School", "school_name: Example Primary Schoo1")
    assert load_policy(file).version != load_policy(DEFAULT_POLICY_FILE).version


def test_an_unknown_role_in_a_chain_is_refused_with_file_line_and_path(tmp_path: Path) -> None:
    file, line = policy_file(
        tmp_path, "- {roles: [deputy_dsl], ack_timeout_minutes: 15}", "- {roles: [dsl2], ack_timeout_minutes: 15}"
    )
    message = refusal(file)
    assert f"{file}:{line}: chains.illegal.levels[1].roles[0]: unknown role 'dsl2'" in message


def test_a_role_without_a_contact_is_refused(tmp_path: Path) -> None:
    file, line = policy_file(tmp_path, "  deputy_dsl:\n    name: Deputy", "  business_manager:\n    name: Deputy")
    message = refusal(file)
    assert "chains.illegal.levels[1].roles[0]: no contact for role 'deputy_dsl'" in message
    assert f"{file}:" in message


def test_an_unknown_role_as_a_contact_key_points_at_the_key(tmp_path: Path) -> None:
    file, line = policy_file(tmp_path, "  it_support_provider:\n", "  it_supprot_provider:\n")
    message = refusal(file)
    assert f"{file}:{line}: contacts.it_supprot_provider: unknown role 'it_supprot_provider'" in message


def test_a_missing_chain_is_refused(tmp_path: Path) -> None:
    file, _ = policy_file(tmp_path, "  security:\n    levels:", "  securty:\n    levels:")
    message = refusal(file)
    assert "chains.security: missing required field 'security'" in message
    assert "chains.securty: unknown field 'securty'" in message


def test_an_sms_address_that_is_not_a_phone_number_is_refused(tmp_path: Path) -> None:
    file, line = policy_file(tmp_path, '{kind: sms, address: "+447700900003"}', '{kind: sms, address: "07700 900003"}')
    message = refusal(file)
    assert f"{file}:{line}: contacts.dsl.channels[1]: a sms address must be a phone number" in message


def test_an_unquoted_time_is_refused_rather_than_read_as_minutes(tmp_path: Path) -> None:
    file, line = policy_file(tmp_path, 'end: "17:00"', "end: 17:00")
    assert f"{file}:{line}: working_hours.end: write the time in quotes as 'HH:MM'" in refusal(file)


def test_an_unknown_reminder_code_for_a_class_is_refused(tmp_path: Path) -> None:
    file, line = policy_file(tmp_path, "allegation_about_staff: [refer_lado,", "allegation_about_staff: [refer_lad0,")
    assert f"{file}:{line}: class_reminders.allegation_about_staff[0]: unknown reminder 'refer_lad0'" in refusal(file)


def test_a_reminder_that_supersedes_an_unknown_one_is_refused(tmp_path: Path) -> None:
    file, line = policy_file(tmp_path, "supersedes: [refer_lado]", "supersedes: [refer_lad0]")
    assert f"{file}:{line}: reminders.refer_lado_at_once.supersedes[0]: unknown reminder 'refer_lad0'" in refusal(file)


def test_a_reminder_that_a_rule_raises_must_be_defined(tmp_path: Path) -> None:
    file, _ = policy_file(tmp_path, "  refer_prevent:\n", "  refer_prevent_typo:\n")
    message = refusal(file)
    assert "reminders: no reminder 'refer_prevent', which rule 'category.terrorist-or-extremist' can raise" in message


def test_a_special_chain_for_an_unknown_circumstance_is_refused(tmp_path: Path) -> None:
    file, line = policy_file(tmp_path, "- when: virus", "- when: viruses")
    assert f"{file}:{line}: special_chains.security[0].when: unknown circumstance 'viruses'" in refusal(file)


def test_a_due_offset_must_say_exactly_one_thing(tmp_path: Path) -> None:
    file, line = policy_file(tmp_path, "due: {hours: 72}", "due: {hours: 72, working_days: 1}")
    assert f"{file}:{line}: reminders.notify_ico.due: give exactly one of" in refusal(file)


def test_broken_yaml_is_refused_with_its_line(tmp_path: Path) -> None:
    file, line = policy_file(tmp_path, "school_name: Example Primary School", "school_name: [Example")
    message = refusal(file)
    assert message.startswith(f"{file}:")
    assert "not valid YAML" in message


def test_a_key_given_twice_is_refused(tmp_path: Path) -> None:
    file, line = policy_file(tmp_path, "school_name: Example Primary School\n", "school_name: A\nschool_name: B\n")
    assert f"{file}:{line + 1}: school_name: given more than once" in refusal(file)


def test_several_problems_are_all_reported_at_once(tmp_path: Path) -> None:
    text = DEFAULT_TEXT.replace("roles: [deputy_dsl], ack_timeout_minutes: 15", "roles: [dsl2], ack_timeout_minutes: 0")
    file = tmp_path / "many.yaml"
    file.write_text(text, encoding="utf-8")
    message = refusal(file)
    assert "chains.illegal.levels[1].roles[0]: unknown role 'dsl2'" in message
    assert "chains.illegal.levels[1].ack_timeout_minutes:" in message


def test_a_directory_of_school_policies_falls_back_to_the_default(tmp_path: Path) -> None:
    (tmp_path / "school-b.yaml").write_text(
        DEFAULT_TEXT.replace("school_id: default", "school_id: school-b"), encoding="utf-8"
    )
    book = load_policies(tmp_path)
    assert book.for_school("school-b").school_id == "school-b"
    assert book.for_school("school-z").school_id == "default"
    assert book.for_school("school-b").version != book.default.version


def test_two_files_for_one_school_are_refused(tmp_path: Path) -> None:
    for name in ("a.yaml", "b.yaml"):
        (tmp_path / name).write_text(DEFAULT_TEXT.replace("school_id: default", "school_id: school-b"), "utf-8")
    with pytest.raises(PolicyError) as refused:
        load_policies(tmp_path)
    assert "b.yaml:" in str(refused.value)
    assert "school_id: school 'school-b' already has a policy" in str(refused.value)
