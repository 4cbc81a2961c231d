"""Time ranges of log queries: ISO 8601 instants, UTC when no zone is given."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from pipelines.errors import InvalidInput

DEFAULT_SPAN = timedelta(days=1)


def parse_instant(value: str, name: str) -> datetime:
    """An ISO 8601 instant (`2026-11-23T10:00:00Z`, `2026-11-23`); naive ones are taken as UTC."""
    try:
        parsed = datetime.fromisoformat(value.strip().replace("z", "Z"))
    except ValueError:
        raise InvalidInput(
            f"{name}={value!r} is not an ISO 8601 time: write it like 2026-11-23T10:00:00Z or 2026-11-23"
        ) from None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


def time_range(
    start: str | None, end: str | None, *, now: datetime | None = None, default_span: timedelta = DEFAULT_SPAN
) -> tuple[datetime, datetime]:
    """[start, end): end defaults to now, start to `default_span` before end; start must be before end."""
    until = parse_instant(end, "end") if end else (now or datetime.now(UTC))
    since = parse_instant(start, "start") if start else until - default_span
    if since >= until:
        raise InvalidInput(f"start ({since.isoformat()}) must be before end ({until.isoformat()})")
    return since, until
