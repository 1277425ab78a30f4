"""The bytes of one plain-text alert email, composed directly rather than through `email.message`.

`EmailMessage` parses every header it is given back through the header registry (addresses, dates and ids
are re-parsed, then re-folded on output): about a fifth of notify's CPU per email in a profile, for a message
whose every part we produce ourselves and have already validated. The rules kept here:
- RFC 5322: CRLF line ends; header lines folded at white space to at most 78 characters where the text allows.
- RFC 2047: a subject that is not plain ASCII (or that holds "=?", which a reader could take for an encoded
  word) goes as UTF-8 "B" encoded words of whole characters, each on a line of at most 76 characters.
- RFC 2045: the body is 7bit when it is ASCII with lines of at most 78 characters, else quoted-printable, so
  it never needs the server's 8BITMIME.
- RFC 6531: an address outside ASCII goes as UTF-8 in the headers; the caller then needs SMTPUTF8.
"""

from __future__ import annotations

import binascii
import re
from base64 import b64encode

_MAX_LINE = 78  # RFC 5322 2.1.1: SHOULD
_ENCODED_LINE = 76  # RFC 2047 2: a line holding an encoded word
_WORD_BYTES = 39  # 4 * ceil(39 / 3) + len("=?utf-8?b??=") + " Subject: " fits in 76
_LINE_BREAK = re.compile(r"\r\n|\r|\n")
_PLAIN = re.compile(r"[\t\x20-\x7e]*")  # what a 7bit line may hold as it is


def compose(
    *, sender: str, to: str, subject: str, date: str, message_id: str, body: str
) -> bytes:
    """The whole message, headers in the order the tests and readers know, ready for SMTP DATA."""
    headers = [
        f"From: {sender}",
        f"To: {to}",
        subject_header(subject),
        f"Date: {date}",
        f"Message-ID: {message_id}",
        # RFC 3834: an automatic message; out-of-office replies should not answer it.
        "Auto-Submitted: auto-generated",
        "X-Auto-Response-Suppress: All",
    ]
    encoding, encoded = body_text(body)
    headers += [
        'Content-Type: text/plain; charset="utf-8"',
        f"Content-Transfer-Encoding: {encoding}",
        "MIME-Version: 1.0",
    ]
    return ("\r\n".join(headers) + "\r\n\r\n").encode() + encoded


def subject_header(subject: str) -> str:
    """`Subject: ...`, folded; encoded words unless the subject is plain printable ASCII."""
    if any(c in subject for c in "\r\n"):
        raise ValueError("a header value must be a single line")
    if subject.isascii() and subject.isprintable() and "=?" not in subject:
        return _fold(f"Subject: {subject}")
    return "Subject: " + "\r\n ".join(_encoded_words(subject))


def body_text(body: str) -> tuple[str, bytes]:
    """(Content-Transfer-Encoding, the body with CRLF line ends)."""
    lines = _LINE_BREAK.split(body)
    if len(lines) > 1 and lines[-1] == "":
        lines.pop()  # a final line break, not an empty last line
    if body.isascii() and all(len(line) <= _MAX_LINE and _PLAIN.fullmatch(line) for line in lines):
        return "7bit", "".join(f"{line}\r\n" for line in lines).encode("ascii")
    raw = "\n".join(lines).encode() + b"\n"
    encoded = binascii.b2a_qp(raw, istext=True)  # soft breaks at 76, trailing white space and "=" escaped
    return "quoted-printable", encoded.replace(b"\n", b"\r\n")


def _fold(line: str) -> str:
    """Break before white space so that each line is at most 78 characters where the words allow."""
    if len(line) <= _MAX_LINE:
        return line
    out: list[str] = []
    current = ""
    for word in re.split(r"(?= )", line):
        if current and len(current) + len(word) > _MAX_LINE:
            out.append(current)
            current = word
        else:
            current += word
    out.append(current)
    return "\r\n".join(out)


def _encoded_words(text: str) -> list[str]:
    """UTF-8 "B" encoded words, each of whole characters (RFC 2047 5: never split a character)."""
    chunks: list[bytes] = []
    chunk = b""
    for char in text:
        data = char.encode()
        if len(chunk) + len(data) > _WORD_BYTES:
            chunks.append(chunk)
            chunk = b""
        chunk += data
    chunks.append(chunk)
    return [f"=?utf-8?b?{b64encode(c).decode('ascii')}?=" for c in chunks]
