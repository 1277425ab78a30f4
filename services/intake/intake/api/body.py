"""JSON bodies parsed strictly ("yes" is not a boolean) and documented in the OpenAPI schema."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ValidationError

M = TypeVar("M", bound=BaseModel)

# Models whose schemas the app adds to the OpenAPI components (see `intake.main`).
DOCUMENTED: list[type[BaseModel]] = []


def json_body(model: type[M], *, required: bool = True) -> Callable[[Request], Awaitable[M | None]]:
    async def parse(request: Request) -> M | None:
        raw = await request.body()
        if not raw.strip() and not required:
            return None
        try:
            return model.model_validate_json(raw, strict=True)
        except ValidationError as exc:
            errors = [{**e, "loc": ("body", *e["loc"])} for e in exc.errors(include_url=False, include_input=False)]
            raise RequestValidationError(errors) from None

    if model not in DOCUMENTED:
        DOCUMENTED.append(model)
    return parse


def documented_body(
    model: type[BaseModel], examples: dict[str, Any], *, required: bool = True
) -> dict[str, Any]:
    """`openapi_extra` for an endpoint whose body `json_body` parses."""
    return {
        "requestBody": {
            "required": required,
            "content": {
                "application/json": {
                    "schema": {"$ref": f"#/components/schemas/{model.__name__}"},
                    "examples": {name: {"value": value} for name, value in examples.items()},
                }
            },
        }
    }
