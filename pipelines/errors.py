"""Domain errors. They know nothing of HTTP; the edge maps each kind to a status."""

from __future__ import annotations


class CorralError(Exception):
    """Base of every error Corral reports to a user. The message says what is wrong and how to fix it."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class BadPayload(CorralError):
    """The request body cannot be read at all (empty, not JSON, truncated Arrow)."""


class InvalidInput(CorralError):
    """The body is readable but has the wrong shape, schema, dtype or values."""


class NotFound(CorralError):
    """The named resource does not exist or is not visible to the caller."""


class Conflict(CorralError):
    """The name exists with a different content, or the state forbids the change."""


class PayloadTooLarge(CorralError):
    """The body is larger than the configured limit."""


class UnsupportedMediaType(CorralError):
    """The Content-Type is not one Corral can decode."""


class Unauthenticated(CorralError):
    """No token, or a token Corral does not know."""


class Forbidden(CorralError):
    """The token's role is too low for the action."""


class NotReady(CorralError):
    """The service is starting, overloaded or not deployed yet; try again later."""

    def __init__(self, message: str, retry_after_s: int = 1) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class TooManyAttempts(CorralError):
    """Too many failed authentications from one client lately: wait `retry_after_s` before the next."""

    def __init__(self, message: str, retry_after_s: int = 60) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class Overloaded(NotReady):
    """The pipeline's bounded queue is full: refused at once so the caller can retry or go elsewhere."""


class DeadlineExceeded(CorralError):
    """The request's deadline passed before its reply was ready; the work left was cancelled."""


class StepFailed(CorralError):
    """User step code raised, or returned something other than one table row per input row.

    The pipeline's author fixes it (the message names the step); other requests are unaffected.
    """


class InternalError(CorralError):
    """A fault on Corral's side: nothing the caller sent or the step's author wrote explains it."""


class BudgetExceeded(NotReady):
    """Work stopped because it ran past the time budget it was given (an explanation, say)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, retry_after_s=5)
