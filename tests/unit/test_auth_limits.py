"""Token lifetimes as the API reads them, and the limit on failed authentications (429 + Retry-After)."""

from __future__ import annotations

import asyncio
import hashlib
import time

import pytest

from cluster.api import TokenIn, parse_duration
from pipelines.errors import NotReady, TooManyAttempts, Unauthenticated
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


def test_a_granted_token_keeps_working_while_the_control_app_is_away_but_not_past_the_grace() -> None:
    control_up = True
    calls = 0

    async def verify(token_hash: str) -> None:
        nonlocal calls
        calls += 1
        if not control_up:
            raise NotReady("the control app is restarting")

    cache = AuthCache(verify, ttl_s=0.01, grace_s=0.2)
    ok = {"authorization": "Bearer ok"}

    async def scenario() -> None:
        nonlocal control_up
        await cache.authorize(ok)
        control_up = False
        for _ in range(5):  # past the TTL: re-checked in the background, the requests go on
            await asyncio.sleep(0.02)
            await cache.authorize(ok)
        assert calls > 1, "expired grants must be re-checked"
        with pytest.raises(NotReady):  # a token never seen cannot be granted without the control app
            await cache.authorize({"authorization": "Bearer new"})
        await asyncio.sleep(0.25)
        with pytest.raises(NotReady, match="restarting"):  # past the grace: wait for the control app
            await cache.authorize(ok)
        control_up = True
        await cache.authorize(ok)

    asyncio.run(scenario())


def test_a_revoked_token_is_refused_on_the_first_request_after_its_ttl_even_after_an_idle_spell() -> None:
    revoked = False

    async def verify(token_hash: str) -> None:
        if revoked:
            raise Unauthenticated("token 0123456789abcdef was revoked")

    cache = AuthCache(verify, ttl_s=0.01)
    ok = {"authorization": "Bearer ok"}

    async def scenario() -> None:
        nonlocal revoked
        await cache.authorize(ok)
        revoked = True
        await asyncio.sleep(0.05)  # idle: no request re-checked it meanwhile
        with pytest.raises(Unauthenticated, match="revoked"):  # the control app answered within stale_wait_s
            await cache.authorize(ok)

    asyncio.run(scenario())


def test_a_slow_control_app_delays_a_stale_grant_by_at_most_the_stale_wait_and_still_decides_it() -> None:
    revoked = False

    async def verify(token_hash: str) -> None:
        if revoked:
            await asyncio.sleep(0.5)  # the control app is slow to answer
            raise Unauthenticated("token 0123456789abcdef was revoked")

    cache = AuthCache(verify, ttl_s=0.01, stale_wait_s=0.05)
    ok = {"authorization": "Bearer ok"}

    async def scenario() -> None:
        nonlocal revoked
        await cache.authorize(ok)
        revoked = True
        await asyncio.sleep(0.02)
        started = time.monotonic()
        await cache.authorize(ok)  # goes on under the grant after stale_wait_s; the re-check goes on
        assert time.monotonic() - started < 0.3
        await asyncio.sleep(0.6)  # the re-check's answer lands
        with pytest.raises(Unauthenticated, match="revoked"):
            await cache.authorize(ok)

    asyncio.run(scenario())


def test_a_busy_token_is_rechecked_before_its_grant_goes_stale_so_its_requests_never_wait() -> None:
    calls = 0

    async def verify(token_hash: str) -> None:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0.1)  # every control-app answer takes 100 ms

    cache = AuthCache(verify, ttl_s=0.4, stale_wait_s=0.3)
    ok = {"authorization": "Bearer ok"}
    token_hash = hashlib.sha256(b"ok").hexdigest()

    async def scenario() -> int:
        await cache.authorize(ok)  # unknown: waits for the answer
        stale_seen = 0
        until = time.monotonic() + 1.6
        while time.monotonic() < until:
            stale_seen += cache.verdicts[token_hash].recheck_at < time.monotonic()
            await cache.authorize(ok)
            await asyncio.sleep(0.01)
        return stale_seen

    assert asyncio.run(scenario()) == 0  # renewed in the background each time, before the TTL ran out
    assert calls >= 1 + 4  # 1.6 s of traffic, a re-check at least every 0.4 s
