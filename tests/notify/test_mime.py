"""The email bytes notify composes itself (notify.channels.mime), read back by the standard library's parser."""

from __future__ import annotations

import random
from email import message_from_bytes, policy
from email.message import EmailMessage

import pytest

from notify.channels import mime

WELSH = "Ysgol Gymraeg Bro Môr a’r Ŵyn"


def compose(subject: str = "Alert", body: str = "Hello\n", to: str = "dsl@oakfield.example") -> bytes:
    return mime.compose(
        sender="alerts@safety.example", to=to, subject=subject, date="Tue, 04 Mar 2025 09:30:00 +0000",
        message_id="<n-1@safety.example>", body=body,
    )


def parse(data: bytes) -> EmailMessage:
    message = message_from_bytes(data, policy=policy.default)
    assert isinstance(message, EmailMessage) and not message.defects
    return message


def header_lines(data: bytes) -> list[bytes]:
    return data.split(b"\r\n\r\n", 1)[0].split(b"\r\n")


def content(message: EmailMessage) -> str:
    return str(message.get_content()).replace("\r\n", "\n")


def test_headers_are_the_ones_readers_and_tests_know_in_order():
    message = parse(compose())
    assert list(message.keys()) == [
        "From", "To", "Subject", "Date", "Message-ID", "Auto-Submitted", "X-Auto-Response-Suppress",
        "Content-Type", "Content-Transfer-Encoding", "MIME-Version",
    ]
    assert message["Message-ID"] == "<n-1@safety.example>" and message["Auto-Submitted"] == "auto-generated"
    assert message.get_content_type() == "text/plain" and message.get_content_charset() == "utf-8"
    assert message["Content-Transfer-Encoding"] == "7bit" and content(message) == "Hello\n"


def test_a_long_ascii_subject_is_folded_at_spaces_within_78_characters():
    subject = "IMMEDIATE ACTION: illegal content, incident OSI-7K2QF at " + "Oakfield Primary School " * 8
    subject = subject.strip()
    data = compose(subject)
    lines = [line for line in header_lines(data) if line.startswith((b"Subject", b" "))]
    assert len(lines) > 1 and all(len(line) <= 78 for line in lines)
    assert parse(data)["Subject"] == subject


@pytest.mark.parametrize("subject", [
    f"URGENT: incident OSI-7K2QF at {WELSH}",
    f"{WELSH} " * 6 + "😀" * 30,  # long, with four-byte characters near every boundary
    "Looks like =?utf-8?q?an_encoded_word?= but is not",
    "tab\there",
])
def test_a_subject_outside_plain_ascii_goes_as_encoded_words_and_reads_back_exactly(subject):
    data = compose(subject)
    lines = [line for line in header_lines(data) if line.startswith((b"Subject", b" "))]
    assert all(len(line) <= 76 and line.isascii() for line in lines)
    assert b"=?utf-8?b?" in lines[0]
    assert parse(data)["Subject"] == subject


def test_a_subject_with_a_line_break_is_refused():
    with pytest.raises(ValueError, match="single line"):
        compose("Alert\r\nBcc: someone@evil.example")


@pytest.mark.parametrize("body", [
    "Incident OSI-7K2QF\n\n  - Secure the device.\n.\nFrom here on\n",
    "trailing spaces   \nand a tab\t\n=equals= at the ends=\n",
])
def test_a_short_ascii_body_goes_as_it_is(body):
    data = compose(body=body)
    assert data.endswith(body.replace("\n", "\r\n").encode())
    assert parse(data)["Content-Transfer-Encoding"] == "7bit" and content(parse(data)) == body


def test_a_body_gets_its_final_line_break():
    assert content(parse(compose(body="no final line break"))) == "no final line break\n"


@pytest.mark.parametrize("body", [
    "Acknowledge: https://safety.example/ack/" + "A" * 200 + "\n",  # a line over 78 characters
    f"Incident at {WELSH}\nWhat to do now:\n  - Don’t forward it.\n",
    f"{WELSH}, trailing spaces   \nand a tab\t\n=equals= at the ends=\n.\n",
    "escape \x1b and bell \x07 characters\n",
])
def test_any_other_body_goes_quoted_printable_in_short_lines_and_reads_back_exactly(body):
    data = compose(body=body)
    message = parse(data)
    assert message["Content-Transfer-Encoding"] == "quoted-printable"
    encoded = data.split(b"\r\n\r\n", 1)[1]
    assert encoded.isascii() and all(len(line) <= 76 for line in encoded.split(b"\r\n"))
    assert content(message) == body


def test_an_address_outside_ascii_is_written_as_utf8():
    message = parse(compose(to="dsl.gŵyn@oakfield.example"))
    assert message["To"] == "dsl.gŵyn@oakfield.example"


def test_reads_back_as_the_standard_library_composes_it():
    """The standard library's EmailMessage, which notify used before, as the oracle: the same subject
    (where it keeps the subject's spaces: it can drop one beside an encoded word) and the same text."""
    rnd = random.Random(5)
    alphabet = "abcdefghij KLMNOP .,:;-=?_\t" + "ôâŵ’€😀\u00a0"
    for _ in range(300):
        subject = "".join(rnd.choice(alphabet) for _ in range(rnd.randint(1, 250))).replace("\t", " ").strip()
        lines = ("".join(rnd.choice(alphabet) for _ in range(rnd.randint(0, 160))) for _ in range(rnd.randint(1, 8)))
        body = "\n".join(lines) + "\n"
        ours = parse(compose(subject, body))
        theirs = EmailMessage()
        theirs["Subject"] = subject
        theirs.set_content(body)
        oracle = parse(theirs.as_bytes(policy=policy.SMTP))
        assert ours["Subject"] == subject
        if oracle["Subject"] == subject:
            assert ours["Subject"] == oracle["Subject"]
        assert content(ours) == content(oracle)
