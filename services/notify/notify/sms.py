"""SMS length arithmetic: text is kept in the GSM 03.38 alphabet so three fragments hold 459 characters.

One character outside that alphabet (a curly apostrophe in a school's name) switches the whole message to
UCS-2, where three fragments hold only 201, so text is folded to GSM before it is measured.
"""

from __future__ import annotations

import unicodedata

FRAGMENT = 153  # characters per fragment of a concatenated GSM-7 message
SINGLE = 160
MAX_FRAGMENTS = 3
MAX_LENGTH = FRAGMENT * MAX_FRAGMENTS  # 459

_BASIC = set(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?¡"
    "ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
_EXTENSION = set("^{}\\[~]|€\f")  # each costs two characters (escape + code)
_TYPOGRAPHIC = str.maketrans(
    {
        "\u2018": "'", "\u2019": "'", "\u201a": "'", "\u201b": "'",
        "\u201c": '"', "\u201d": '"', "\u201e": '"',
        "\u2010": "-", "\u2011": "-", "\u2012": "-", "\u2013": "-", "\u2014": "-", "\u2212": "-",
        "\u2026": "...", "\u00a0": " ", "\u202f": " ", "\t": " ",
    }
)  # fmt: skip


def to_gsm(text: str) -> str:
    """Fold text into the GSM alphabet: typographic marks to ASCII, accents dropped where GSM lacks the
    letter (Welsh ŵ to w), anything else to '?'."""
    out: list[str] = []
    for ch in text.translate(_TYPOGRAPHIC):
        if ch in _BASIC or ch in _EXTENSION:
            out.append(ch)
            continue
        base = "".join(c for c in unicodedata.normalize("NFKD", ch) if not unicodedata.combining(c))
        out.append(base if base and all(c in _BASIC for c in base) else "?")
    return "".join(out)


def length(text: str) -> int:
    """Length in GSM-7 septets, as a carrier counts it."""
    return sum(2 if ch in _EXTENSION else 1 for ch in text)


def fragments(text: str) -> int:
    n = length(text)
    return 1 if n <= SINGLE else -(-n // FRAGMENT)


def truncate(text: str, limit: int, ellipsis: str = "...") -> str:
    """Cut `text` to at most `limit` septets, marking the cut."""
    if length(text) <= limit:
        return text
    room = max(0, limit - length(ellipsis))
    cut: list[str] = []
    used = 0
    for ch in text:
        cost = 2 if ch in _EXTENSION else 1
        if used + cost > room:
            break
        cut.append(ch)
        used += cost
    return "".join(cut).rstrip() + ellipsis
