"""The control API's OpenAPI document, with the error replies it really sends.

FastAPI documents a 422 as `{"detail": [...]}`; Corral answers every error, 422 included, as
`{"error": "<what is wrong and how to fix it>"}`. Clients and fuzzers validate against the document,
so it says so: the 422 of each operation, and a `4XX` for the rest (401, 403, 404, 409, 413, 429).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

ERROR_SCHEMA = {
    "type": "object",
    "properties": {"error": {"type": "string", "description": "what is wrong and how to fix it"}},
    "required": ["error"],
}
_ERROR_CONTENT = {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}


def with_error_replies(app: FastAPI) -> Callable[[], dict[str, Any]]:
    """An `app.openapi` that documents Corral's error body on every operation."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            document = get_openapi(
                title=app.title, version=app.version, description=app.description, routes=app.routes
            )
            schemas = document.setdefault("components", {}).setdefault("schemas", {})
            schemas.pop("HTTPValidationError", None)
            schemas.pop("ValidationError", None)
            schemas["Error"] = ERROR_SCHEMA
            for item in document.get("paths", {}).values():
                for operation in item.values():
                    responses = operation.setdefault("responses", {})
                    if "422" in responses:
                        responses["422"] = {"description": "Invalid request", "content": _ERROR_CONTENT}
                    responses.setdefault("4XX", {"description": "Refused", "content": _ERROR_CONTENT})
            app.openapi_schema = document
        return app.openapi_schema

    return openapi
