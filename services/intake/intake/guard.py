"""The door's first check, before routing: body size, content type, and no imagery in any field.

Pure ASGI middleware, so that an oversized or multipart body is refused before anything parses it,
and so that a JSON body is searched for media in every field, including ones the model would reject.
"""

from __future__ import annotations

import json
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


def is_json(content_type: str) -> bool:
    media = content_type.split(";", 1)[0].strip().lower()
    return media == "application/json" or (media.startswith("application/") and media.endswith("+json"))


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
            kind = imagery.sniff(body[:64])
            if kind is not None:
                raise ImageryRefused("the request body", kind)
            raise UnsupportedMediaType(
                f"Content-Type {content_type or '(none)'} is not accepted: send application/json."
            )
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
