"""The SMTP sink stores what it receives as .eml files that read back as the messages that were sent."""

from __future__ import annotations

import signal
import smtplib
import subprocess
import sys
from datetime import UTC, datetime
from email.message import EmailMessage
from pathlib import Path

from devstack.ports import free_port, wait_for_port
from devstack.smtp_sink import (
    message_filename,
    message_id_of,
    message_paths,
    read_messages,
    running_sink,
    store_message,
)


def _message(message_id: str = "<notification-0001@escalation.example>") -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = "escalations@school.example"
    msg["To"] = "dsl@school.example"
    msg["Subject"] = "Incident INC-42: illegal content, acknowledge now"
    msg["Message-ID"] = message_id
    msg.set_content("Open the link to acknowledge.\nNo pupil names here.")
    return msg


def test_a_sent_message_reads_back_with_headers_body_and_envelope(tmp_path: Path) -> None:
    port = free_port()
    with running_sink(tmp_path, port), smtplib.SMTP("127.0.0.1", port, timeout=5) as smtp:
        smtp.send_message(_message(), to_addrs=["dsl@school.example", "head@school.example"])

    [received] = read_messages(tmp_path)
    assert received["Subject"] == "Incident INC-42: illegal content, acknowledge now"
    assert received["Message-ID"] == "<notification-0001@escalation.example>"
    assert received.get_content().startswith("Open the link to acknowledge.")
    assert received["X-Envelope-From"] == "<escalations@school.example>"
    assert received["X-Envelope-To"] == "dsl@school.example, head@school.example"  # Bcc shows up here only
    [path] = message_paths(tmp_path)
    assert path.name.endswith("-notification-0001@escalation.example.eml")


def test_a_resent_message_with_the_same_message_id_is_kept_as_a_second_file(tmp_path: Path) -> None:
    port = free_port()
    with running_sink(tmp_path, port), smtplib.SMTP("127.0.0.1", port, timeout=5) as smtp:
        smtp.send_message(_message())
        smtp.send_message(_message())

    assert len(read_messages(tmp_path)) == 2
    assert len({p.name for p in message_paths(tmp_path)}) == 2


def test_storing_leaves_no_temporary_file_and_never_overwrites(tmp_path: Path) -> None:
    raw = _message().as_bytes()
    first = store_message(tmp_path, raw)
    second = store_message(tmp_path, raw)

    assert first != second and first.read_bytes().endswith(raw) and second.read_bytes().endswith(raw)
    assert [p for p in tmp_path.rglob("*") if p.is_file() and p.suffix != ".eml"] == []


def test_file_names_sort_by_arrival_and_cannot_escape_the_folder() -> None:
    name = message_filename("<../../etc/passwd@x>", now=datetime(2026, 1, 2, 3, 4, 5, 6, tzinfo=UTC))

    assert name == "20260102T030405.000006Z-etc_passwd@x.eml"
    assert "/" not in message_filename("</>")
    assert message_filename(None).split("-", 1)[1].startswith("no-message-id-")


def test_the_message_id_is_read_from_the_headers_however_it_is_written() -> None:
    assert message_id_of(_message().as_bytes()) == "<notification-0001@escalation.example>"
    assert message_id_of(b"Subject: x\r\nmessage-ID:\r\n <folded@x>\r\nTo: y\r\n\r\nbody") == "<folded@x>"
    assert message_id_of(b"Subject: x\nMESSAGE-ID: <unix@x>\n\nbody") == "<unix@x>"
    # A Message-ID line in the body is not the message's.
    assert message_id_of(b"Subject: x\r\n\r\nMessage-ID: <in-the-body@x>\r\n") is None
    assert message_filename(message_id_of(b"message-ID:\r\n <folded@x>\r\n\r\n")).endswith("-folded@x.eml")


def test_reading_a_folder_that_does_not_exist_yet_gives_no_messages(tmp_path: Path) -> None:
    assert read_messages(tmp_path / "mail") == []


def test_the_command_line_sink_runs_in_the_foreground_and_stops_on_sigterm(tmp_path: Path) -> None:
    port = free_port()
    mail = tmp_path / "mail"
    proc = subprocess.Popen(
        [sys.executable, "-m", "devstack.smtp_sink", "--port", str(port), "--dir", str(mail)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        wait_for_port("127.0.0.1", port, timeout=10, what="smtp sink")
        with smtplib.SMTP("127.0.0.1", port, timeout=5) as smtp:
            smtp.send_message(_message("<cli-1@escalation.example>"))
        assert [m["Message-ID"] for m in read_messages(mail)] == ["<cli-1@escalation.example>"]
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=10)
    assert proc.returncode == 0, out
    assert "listening on 127.0.0.1" in out
