"""The edge: domain errors to HTTP statuses and JSON bodies, and unwrapping errors from handles."""

from __future__ import annotations

import logging

import orjson
from starlette.responses import Response

from pipelines import errors as e

log = logging.getLogger(__name__)

STATUS: dict[type[e.CorralError], int] = {
    e.BadPayload: 400,
    e.Unauthenticated: 401,
    e.Forbidden: 403,
    e.TooManyAttempts: 429,
    e.NotFound: 404,
    e.Conflict: 409,
    e.PayloadTooLarge: 413,
    e.UnsupportedMediaType: 415,
    e.InvalidInput: 422,
    e.NotReady: 503,
    e.DeadlineExceeded: 504,
    e.StepFailed: 422,  # the pipeline's own step: its author fixes it, the replica keeps serving
    e.InternalError: 500,
}


def status_of(exc: e.CorralError) -> int:
    for cls in type(exc).__mro__:
        if cls in STATUS:
            return STATUS[cls]  # type: ignore[index]
    return 500


def error_parts(exc: e.CorralError, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    """Status, headers and JSON body of the reply for a domain error."""
    status = status_of(exc)
    extra = {**(headers or {}), "content-type": "application/json"}
    if isinstance(exc, e.NotReady | e.TooManyAttempts):
        extra["retry-after"] = str(exc.retry_after_s)
    if status == 401:
        extra["www-authenticate"] = "Bearer"
    return status, extra, orjson.dumps({"error": exc.message})


def error_response(exc: e.CorralError, headers: dict[str, str] | None = None) -> Response:
    status, extra, body = error_parts(exc, headers)
    return Response(body, status_code=status, headers=extra)


def as_domain_error(exc: BaseException) -> e.CorralError:
    """Errors raised in another replica arrive wrapped by Ray; recover the domain error inside.

    Anything that is not a domain error is a fault on our side or a dead replica: the caller gets a
    503 to retry, never a raw traceback.
    """
    if isinstance(exc, e.CorralError) and hasattr(exc, "message"):
        return exc
    cause = getattr(exc, "cause", None)
    if isinstance(cause, e.CorralError):
        return cause
    name = type(exc).__name__
    if "BackPressure" in name or "ActorDied" in name or "Unavailable" in name or "ActorUnavailable" in name:
        return e.NotReady(f"pipeline is overloaded or restarting ({name}): retry shortly", retry_after_s=1)
    log.exception("unexpected error behind a handle", exc_info=exc)
    return e.InternalError(f"internal error ({name}); the request was not processed. See the replica logs")
