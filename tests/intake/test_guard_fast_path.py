"""The body guard's fast path (`plainly_clean`) only ever passes bodies the full check would pass, and it is the
path ordinary reports take."""

from __future__ import annotations

import base64
import json
import textwrap
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from intake_support import b64, report, tiny_jpeg, tiny_png

from intake.api.examples import REPORT_EXAMPLES
from intake.guard import check_document, plainly_clean
from intake.problems import ProblemError

# Pieces that make the full check refuse a string, or come close, mixed into ordinary text.
_PIECES = [
    "data:image/png;base64,", "DATA:", "data:", b64(tiny_png()), b64(tiny_jpeg()), "A" * 39, "A" * 40,
    "\n".join(textwrap.wrap(base64.b64encode(tiny_jpeg()).decode(), 20)), "\x00", "\ud800", "\x7f", "\x89PNG\r\n",
    "é", "\t", "\\", "\"", "0123456789abcdef" * 3, "-_" * 25, "see the device in room 4",
]
_strings = st.lists(st.one_of(st.sampled_from(_PIECES), st.text(max_size=12)), max_size=4).map("".join)
_documents = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), _strings),
    lambda children: st.one_of(st.lists(children, max_size=4), st.dictionaries(_strings, children, max_size=4)),
    max_leaves=20,
)


def _encoded(document: Any, ascii_only: bool) -> bytes:
    return json.dumps(document, ensure_ascii=ascii_only).encode("utf-8", "surrogatepass")


def _full_check_passes(body: bytes) -> bool:
    try:
        check_document(json.loads(body))
    except ProblemError:
        return False
    return True


@settings(max_examples=600, deadline=None)
@given(document=_documents, ascii_only=st.booleans())
def test_a_body_passed_plainly_also_passes_the_full_check(document: Any, ascii_only: bool) -> None:
    body = _encoded(document, ascii_only)
    if plainly_clean(body):
        assert _full_check_passes(body), body


@pytest.mark.parametrize("name", sorted(REPORT_EXAMPLES))
def test_ordinary_reports_take_the_fast_path(name: str) -> None:
    assert plainly_clean(json.dumps(REPORT_EXAMPLES[name]).encode())


@pytest.mark.parametrize("body", [
    report(description=f"Screenshot attached: {b64(tiny_png())}"),
    report(description="data:image/png;base64," + b64(tiny_png())),
    report(description="see:\n" + "\n".join(textwrap.wrap(base64.b64encode(tiny_jpeg()).decode(), 76))),
    report(description="\u0089PNG\r\n\u001a\n"),
    report(description="nul \u0000 here"),
    report(attachments=[{"file": "DATA:video/mp4;base64,AAAAIGZ0eXBpc29t"}]),
], ids=["base64 png", "data uri", "mime lines", "raw png bytes", "nul", "data uri in an unknown field"])
def test_what_the_full_check_refuses_never_takes_the_fast_path(body: dict[str, Any]) -> None:
    encoded = json.dumps(body).encode()
    assert not _full_check_passes(encoded)
    assert not plainly_clean(encoded)


def test_deep_nesting_takes_the_full_path() -> None:
    assert not plainly_clean(b"[" * 65 + b"]" * 65)
    assert plainly_clean(b"[" * 64 + b"]" * 64)
