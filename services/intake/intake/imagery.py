"""Finds image, video or file data anywhere in a request, so that it can be refused (seeds 000, 001).

A report says where the evidence is; it never carries it. This looks in every string (and key) of a
JSON body for data: URIs, for base64 runs whose decoded bytes start like a media or archive file, for
very long base64 runs of binary data, and for raw file signatures; and at raw bodies for signatures.
"""

from __future__ import annotations

import base64
import binascii
import itertools
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

# Long enough that ordinary words, ids and hashes in hex never qualify; a 1x1 PNG is ~90 characters.
MIN_BASE64_RUN = 40
# A run this long that decodes to binary is file data whatever its signature.
LONG_BINARY_RUN = 2048

# RFC 2397: the media type is optional ("data:,..." and "data:;base64,..." are text/plain); something must follow.
_DATA_URI = re.compile(r"data:(?:[a-z0-9.+-]+/[a-z0-9.+-]+)?(?:;[a-z0-9.+=-]+)*,(?=\S)", re.IGNORECASE)
# SVG markup is an image even when it is written out as text.
_SVG_MARKUP = re.compile(r"<svg[\s>/]", re.IGNORECASE)
# One character of base64 or base64url.
BASE64_CHAR = r"[A-Za-z0-9+/_-]"
_BASE64_RUN = re.compile(BASE64_CHAR + "{" + str(MIN_BASE64_RUN) + r",}={0,2}")
# One line of MIME-style base64 (lines of base64 separated by line breaks), matched a line at a time: a pattern
# spanning the lines backtracked quadratically over a long run without a line break (64 KiB: about a minute).
_BASE64_LINE = re.compile(r"[ \t]*([A-Za-z0-9+/]{16,}={0,2})[ \t]*")
_BASE64_LAST_LINE = re.compile(r"[ \t]*([A-Za-z0-9+/]*={0,2})[ \t]*")
# Enough base64 after a file's encoded start to hold what `sniff` reads (256 bytes).
_ENCODED_HEAD = re.compile(BASE64_CHAR + "{" + str(MIN_BASE64_RUN) + ",344}")
_WHITESPACE = re.compile(r"\s+")
# Hex of a whole file: longer than a SHA-512 (128 characters), so that hashes quoted in a report never qualify.
_HEX_RUN = re.compile(r"(?<![0-9A-Fa-f])[0-9A-Fa-f]{130,}")

# (offset, signature, what it is)
_SIGNATURES: tuple[tuple[int, bytes, str], ...] = (
    (0, b"\x89PNG\r\n\x1a\n", "a PNG image"),
    (0, b"\xff\xd8\xff", "a JPEG image"),
    (0, b"GIF87a", "a GIF image"),
    (0, b"GIF89a", "a GIF image"),
    (0, b"II*\x00", "a TIFF image"),
    (0, b"MM\x00*", "a TIFF image"),
    (0, b"<svg", "an SVG image"),
    (0, b"\x00\x00\x01\x00", "an icon image"),
    (4, b"ftyp", "a video or HEIC image"),
    (0, b"\x1a\x45\xdf\xa3", "a Matroska/WebM video"),
    (0, b"\x00\x00\x01\xba", "an MPEG video"),
    (0, b"\x00\x00\x01\xb3", "an MPEG video"),
    (0, b"FLV\x01", "a Flash video"),
    (0, b"OggS", "an Ogg media file"),
    (0, b"ID3", "an MP3 audio file"),
    (0, b"fLaC", "a FLAC audio file"),
    (0, b"%PDF-", "a PDF document"),
    (0, b"PK\x03\x04", "a ZIP archive or office document"),
    (0, b"\x1f\x8b", "a gzip archive"),
    (0, b"7z\xbc\xaf\x27\x1c", "a 7-Zip archive"),
    (0, b"Rar!\x1a\x07", "a RAR archive"),
    (0, b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1", "an office document"),
)
_RIFF_KINDS = {b"WEBP": "a WebP image", b"AVI ": "an AVI video", b"WAVE": "a WAV audio file"}


def _encoded_starts() -> tuple[str, ...]:
    """The base64 (and base64url) characters that every encoding of a file's signature starts with, for signatures
    of three bytes or more (shorter ones would turn up by chance in ordinary ids and tokens)."""
    heads = [(sig, 0) for offset, sig, _ in _SIGNATURES if offset == 0 and len(sig) >= 3] + [(b"RIFF", 0)]
    starts = set()
    for signature, _ in heads:
        head = base64.b64encode(signature).decode()[: len(signature) * 8 // 6]
        starts |= {head, head.translate(str.maketrans("+/", "-_"))}
    return tuple(sorted(starts, key=len, reverse=True))


ENCODED_STARTS = _encoded_starts()
_ENCODED_START = re.compile("|".join(re.escape(h) for h in ENCODED_STARTS))


@dataclass(frozen=True)
class Finding:
    where: str
    what: str


def sniff(data: bytes) -> str | None:
    """What kind of media or file these bytes start, or None."""
    if data[:4] == b"RIFF" and data[8:12] in _RIFF_KINDS:
        return _RIFF_KINDS[data[8:12]]
    if data[:2] == b"BM" and len(data) >= 14 and data[6:10] == b"\x00\x00\x00\x00":
        return "a BMP image"
    for offset, signature, what in _SIGNATURES:
        if data[offset : offset + len(signature)] == signature:
            return what
    head = data[:256].lstrip().lower()
    if head.startswith(b"<?xml") and b"<svg" in head:
        return "an SVG image"
    return None


def _decode(run: str) -> bytes | None:
    compact = re.sub(r"\s+", "", run)
    altchars = b"-_" if ("-" in compact or "_" in compact) else None
    try:
        return base64.b64decode(compact + "=" * (-len(compact) % 4), altchars=altchars, validate=False)
    except (binascii.Error, ValueError):
        return None


def _looks_binary(data: bytes) -> bool:
    sample = data[:512]
    printable = sum(1 for b in sample if 32 <= b < 127 or b in (9, 10, 13))
    return len(sample) > 0 and printable / len(sample) < 0.85


# Characters that are not text (C0 controls but tab and line breaks, DEL, C1 controls, Latin-1 above them).
_NOT_TEXT = re.compile(r"[\x00-\x08\x0e-\x1f\x7f-\xff]")


def inspect_text(text: str) -> str | None:
    """What media or file data a string carries, or None. Linear in the string's length: the guard runs it on
    every string of a body before the caller is authenticated."""
    if ":" in text and "data:" in text.lower() and _DATA_URI.search(text):
        return "a data: URI"
    if "<" in text and _SVG_MARKUP.search(text):
        return "an SVG image"
    if _NOT_TEXT.search(text, 0, 8):
        # Raw bytes smuggled into a JSON string (e.g. "\u0089PNG..."), not text.
        raw_kind = sniff(text[:16].encode("latin-1", "ignore"))
        if raw_kind is not None:
            return raw_kind
    if len(text) < MIN_BASE64_RUN:
        return None
    runs = (m.group(0) for m in _BASE64_RUN.finditer(text))
    for run in itertools.chain(runs, _base64_line_blocks(text)):
        decoded = _decode(run[:4096])
        if decoded is None:
            continue
        kind = sniff(decoded)
        if kind is not None:
            return f"{kind} (base64)"
        if len(run) >= LONG_BINARY_RUN and _looks_binary(decoded):
            return "file data (base64)"
    return _encoded_file_within(text) or _hex_file(text)


def _base64_line_blocks(text: str) -> Iterator[str]:
    """MIME-style base64: two or more lines, each of 16 base64 characters or more but the last, joined."""
    if "\n" not in text:
        return
    block: list[str] = []
    for line in text.split("\n"):
        line = line.removesuffix("\r")
        full = _BASE64_LINE.fullmatch(line)
        if full is not None:
            block.append(full.group(1))
            continue
        last = _BASE64_LAST_LINE.fullmatch(line) if block else None
        if last is not None:
            block.append(last.group(1))
        if len(block) > 1:
            yield "".join(block)
        block = []
    if len(block) > 1:
        yield "".join(block)


def _encoded_file_within(text: str) -> str | None:
    """A file's base64 that does not start a run of its own: glued to a word before it ("img-iVBORw0..."), or cut
    into pieces by spaces or line breaks. Only known signatures count here, at the point where one starts."""
    compact = _WHITESPACE.sub("", text)
    for start in _ENCODED_START.finditer(compact):
        head = _ENCODED_HEAD.match(compact, start.start())
        if head is None:
            continue
        decoded = _decode(head.group(0))
        kind = sniff(decoded) if decoded is not None else None
        if kind is not None:
            return f"{kind} (base64)"
    return None


def _hex_file(text: str) -> str | None:
    """A file written out in hex (its first 256 bytes are enough to know it)."""
    for run in _HEX_RUN.finditer(text):
        digits = run.group(0)[:512]
        kind = sniff(bytes.fromhex(digits[: len(digits) // 2 * 2]))
        if kind is not None:
            return f"{kind} (hex)"
    return None


# Where a string is in a document, as a chain of (parent, key or index) built only as deep as it goes; the
# dotted path is written out only for the string that is reported.
_Where = tuple[Any, str | int] | None


def _collect(node: Any, where: _Where, out: list[tuple[_Where, str]]) -> None:
    if isinstance(node, str):
        out.append((where, node))
    elif isinstance(node, dict):
        for key, value in node.items():
            child = (where, str(key))
            out.append((child, str(key)))
            _collect(value, child, out)
    elif isinstance(node, list):
        for i, item in enumerate(node):
            _collect(item, (where, i), out)


def path_of(where: _Where) -> str:
    """'subjects[0].name' for the chain of keys and indexes; '(body)' for the document itself."""
    parts: list[str | int] = []
    while where is not None:
        where, part = where
        parts.append(part)
    out = ""
    for part in reversed(parts):
        out += f"[{part}]" if isinstance(part, int) else (f"{out and '.'}{part}")
    return out or "(body)"


def located_strings(document: Any) -> list[tuple[_Where, str]]:
    """Every string of a parsed JSON document, keys included, with where it is (see `path_of`)."""
    out: list[tuple[_Where, str]] = []
    _collect(document, None, out)
    return out


def find_in_json(document: Any) -> Finding | None:
    """The first field of a parsed JSON document that carries media or file data."""
    return find_in_strings(located_strings(document))


def find_in_strings(located: list[tuple[_Where, str]]) -> Finding | None:
    for where, text in located:
        what = inspect_text(text)
        if what is not None:
            return Finding(path_of(where), what)
    return None


def strings(document: Any) -> Iterator[tuple[str, str]]:
    """Every (path, string) of a parsed JSON document, keys included."""
    return ((path_of(where), text) for where, text in located_strings(document))
