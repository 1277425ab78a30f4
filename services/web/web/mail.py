"""The sign-in email, sent by the web app itself over SMTP (the same server notify uses).

Not through notify's event topics on purpose: every topic is written into audit's permanent evidence log,
and a sign-in link is a credential that must not be kept there, even spent."""

from __future__ import annotations

from datetime import timedelta
from email.message import EmailMessage
from email.utils import make_msgid

import aiosmtplib

from web.members import Member


def signin_message(member: Member, link: str, ttl: timedelta, sender: str) -> EmailMessage:
    message = EmailMessage()
    message["From"] = sender
    message["To"] = member.email
    message["Subject"] = f"Sign in to the online-safety desk of {member.school_name}"
    message["Message-ID"] = make_msgid(domain=sender.rpartition("@")[2] or None)
    minutes = int(ttl.total_seconds() // 60)
    message.set_content(
        f"Use this link to sign in to {member.school_name}'s online-safety pages:\n\n{link}\n\n"
        f"It works once, within {minutes} minutes. If you did not ask to sign in, ignore this email.\n"
    )
    return message


async def send(message: EmailMessage, host: str, port: int) -> None:
    await aiosmtplib.send(message, hostname=host, port=port, timeout=30)
