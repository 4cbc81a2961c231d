"""Token lifetimes as the API reads them, and the limit on failed authentications (429 + Retry-After)."""

from __future__ import annotations

import asyncio
import hashlib

import pytest

from cluster.api import TokenIn, parse_duration
from pipelines.errors import TooManyAttempts, Unauthenticated
from serving.auth import AuthCache, FailureLimiter, client_of
from serving.errors import error_parts

GOOD = hashlib.sha256(b"right").hexdigest()


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        (3600, 3600),
        (1.5, 1.5),
        ("45s", 45),
        ("15m", 900),
        ("12h", 43200),
        ("30d", 2592000),
        ("2w", 1209600),
        (" 90 ", 90),
    ],
)
def test_durations_in_seconds_or_units(text: str | float, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["soon", "-5", "0", "12y", "", "11000d", "1h30m"])
def test_bad_durations_say_how_to_write_one(text: str) -> None:
    with pytest.raises(ValueError, match=r"duration|more than 0 s"):
        parse_duration(text)
    with pytest.raises(ValueError):
        TokenIn.model_validate({"role": "viewer", "expires_in": text})


def test_repeated_failures_of_one_client_become_a_429_with_retry_after() -> None:
    limiter = FailureLimiter(max_failures=3, window_s=60)
    denied = Unauthenticated("unknown token")
    assert [limiter.failed("10.0.0.7", denied) for _ in range(3)] == [denied] * 3
    fourth = limiter.failed("10.0.0.7", denied)
    assert isinstance(fourth, TooManyAttempts)
    status, headers, body = error_parts(fourth)
    assert status == 429 and 1 <= int(headers["retry-after"]) <= 61
    assert b"too many failed authentications from this client (4 in 60 s)" in body
    assert limiter.failed("10.0.0.8", denied) is denied  # another client is not held back


def test_a_valid_token_passes_while_its_neighbours_are_limited() -> None:
    async def verify(token_hash: str) -> None:
        if token_hash != GOOD:
            raise Unauthenticated("unknown token")

    cache = AuthCache(verify, limiter=FailureLimiter(max_failures=1, window_s=60))

    async def scenario() -> None:
        bad = {"authorization": "Bearer wrong", "x-forwarded-for": "proxy"}
        with pytest.raises(Unauthenticated):
            await cache.authorize(bad)
        with pytest.raises(TooManyAttempts):
            await cache.authorize(bad)
        # same client, valid token: served
        await cache.authorize({"authorization": "Bearer right", "x-forwarded-for": "proxy"})

    asyncio.run(scenario())


def test_the_client_is_the_first_forwarded_address_else_the_peer() -> None:
    assert client_of({"x-forwarded-for": "203.0.113.9, 10.0.0.1"}, "127.0.0.1") == "203.0.113.9"
    assert client_of({}, "127.0.0.1") == "127.0.0.1"
    assert client_of({}, None) == "unknown"
