"""The door's first check, before routing: body size, content type, and no imagery in any field.

Pure ASGI middleware, so that an oversized or multipart body is refused before anything parses it,
and so that a JSON body is searched for media in every field, including ones the model would reject.
"""

from __future__ import annotations

import json
import re
from typing import Any

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from intake import imagery
from intake.problems import (
    BodyTooLarge,
    FieldError,
    ImageryRefused,
    InvalidInput,
    MalformedJson,
    ProblemError,
    UnsupportedMediaType,
    problem_response,
)

_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
_MEDIA_TYPES = ("multipart/", "image/", "video/", "audio/")

# For `plainly_clean`: printable ASCII and the line breaks; base64 characters as "a", everything else as " ".
_PLAIN_TEXT = bytes(range(0x20, 0x7F)) + b"\t\n\r"
_BASE64_AS_A = bytes(ord("a") if re.fullmatch(imagery.BASE64_CHAR, chr(i)) else ord(" ") for i in range(256))
_BASE64_RUN_AS_A = b"a" * imagery.MIN_BASE64_RUN
_MAX_PLAIN_BRACKETS = 64
_ENCODED_STARTS = tuple(start.encode() for start in imagery.ENCODED_STARTS)


def is_json(content_type: str) -> bool:
    media = content_type.split(";", 1)[0].strip().lower()
    return media == "application/json" or (media.startswith("application/") and media.endswith("+json"))


def plainly_clean(body: bytes) -> bool:
    """True when a JSON body holds nothing `check_document` refuses, seen from its bytes without parsing them: a
    few scans in C instead of `json.loads` and a walk over every string (~4 us against ~30 us for a report).

    Without a backslash there are no escapes, so every string of the document, keys included, is a slice of the
    body as it stands. Then: printable ASCII only leaves no raw bytes, NUL or surrogates in any string; no
    "data:" or "<svg" (in any case) leaves no data: URI or SVG markup; no run of MIN_BASE64_RUN base64 characters
    leaves no base64 or hex run (a run cannot cross a quote), and MIME-style base64 lines need a line break inside a
    string, which JSON can only write as an escape; no file's encoded start once spaces are taken out leaves no
    base64 cut into pieces; and a body with few brackets cannot nest deeply enough to exhaust the recursion. Any
    other body, including one that only looks suspicious outside its strings, gets the full check."""
    lowered = body.lower()
    compact = body.translate(None, b" \t")
    return (
        not body.translate(None, _PLAIN_TEXT)
        and b"\\" not in body
        and b"data:" not in lowered
        and b"<svg" not in lowered
        and not any(start in compact for start in _ENCODED_STARTS)
        and _BASE64_RUN_AS_A not in body.translate(_BASE64_AS_A)
        and body.count(b"[") + body.count(b"{") <= _MAX_PLAIN_BRACKETS
    )


def check_document(document: Any) -> None:
    """Refuse imagery anywhere, and strings PostgreSQL cannot store (NUL, unpaired surrogates)."""
    located = imagery.located_strings(document)
    finding = imagery.find_in_strings(located)
    if finding is not None:
        raise ImageryRefused(finding.where, finding.what)
    for place, text in located:
        if "\x00" in text:
            where = imagery.path_of(place)
            raise InvalidInput(f"{where}: contains a NUL character",
                               errors=[FieldError(field=where, reason="contains a NUL character")])
        if text.isascii():
            continue  # no surrogates in ASCII
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            where = imagery.path_of(place)
            raise InvalidInput(f"{where}: is not valid Unicode text",
                               errors=[FieldError(field=where, reason="contains an unpaired surrogate")]) from None


class BodyGuard:
    def __init__(self, app: ASGIApp, *, max_body_bytes: int) -> None:
        self.app = app
        self.limit = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in _BODY_METHODS:
            await self.app(scope, receive, send)
            return
        try:
            body = await self._checked_body(scope, receive)
        except ProblemError as exc:
            await problem_response(exc, scope.get("path"))(scope, receive, send)
            return

        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _checked_body(self, scope: Scope, receive: Receive) -> bytes:
        headers = Headers(scope=scope)
        too_large = BodyTooLarge(f"The body may be at most {self.limit} bytes ({self.limit // 1024} KiB).")
        declared = headers.get("content-length")
        if declared is not None:
            if not declared.strip().isdigit():
                raise ProblemError("The Content-Length header is not a number.")
            if int(declared) > self.limit:
                raise too_large
        content_type = headers.get("content-type", "")
        if content_type.lower().startswith(_MEDIA_TYPES):
            raise ImageryRefused("the request body", f"a {content_type.split(';')[0].strip()} upload")
        body = await self._read(receive, too_large)
        if not body:
            return body
        if not is_json(content_type):
            # Imagery in a body of any type is refused as imagery (the policy's 422), not only as the wrong type:
            # raw file bytes, or a data: URI or base64 in a text or form body.
            kind = imagery.sniff(body[:64]) or imagery.inspect_text(body.decode("utf-8", "replace"))
            if kind is not None:
                raise ImageryRefused("the request body", kind)
            raise UnsupportedMediaType(
                f"Content-Type {content_type or '(none)'} is not accepted: send application/json."
            )
        if plainly_clean(body):
            return body  # the full check below would pass it (and what is not JSON, the endpoint's parser names)
        try:
            document = json.loads(body)
        except (ValueError, RecursionError):
            return body  # the endpoint's own parser names the error
        try:
            check_document(document)
        except RecursionError:
            raise MalformedJson("The body is nested too deeply.") from None
        return body

    async def _read(self, receive: Receive, too_large: BodyTooLarge) -> bytes:
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                break
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.limit:
                raise too_large
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        return b"".join(chunks)
