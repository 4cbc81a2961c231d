"""Bearer-token checks at a router, cached so a request pays a dict lookup, not a control-plane call."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from pipelines.errors import CorralError, NotReady, TooManyAttempts

log = logging.getLogger("corral.auth")

# verify(token_hash) returns when the token may use this pipeline, raises a CorralError otherwise.
Verify = Callable[[str], Awaitable[None]]
# A granted token is re-checked with the control app after this long, so a revoked token stops
# working within about a second (one call per token per replica per TTL; measured cost: none visible).
AUTH_TTL_S = 0.5
# How long a token the control app granted keeps working while the control app cannot be asked.
AUTH_GRACE_S = 60.0
# How long a request with a stale grant waits for the re-check before it goes on under the grace:
# long enough for an answering control app (a few ms), so a revocation lands on the very next
# request even after an idle spell; short enough that a control app away costs little.
STALE_WAIT_S = 0.25
DENIED_TTL_S = 2.0
MAX_FAILURES = 100  # failed authentications per client and window before it gets a 429
FAILURE_WINDOW_S = 60.0
MAX_ENTRIES = 10_000


def bearer_token(headers: dict[str, str]) -> str:
    header = headers.get("authorization", "")
    return header[7:].strip() if header[:7].lower() == "bearer " else ""


@dataclass
class _Verdict:
    recheck_at: float  # monotonic time after which the control app is asked again
    verified_at: float  # when the control app last answered for this token
    error: CorralError | None  # None: granted


class AuthCache:
    """Verdicts of `verify` per token hash: granted ones for `ttl_s`, denied ones for `denied_ttl_s`.

    A grant used in the second half of its TTL is re-checked in the background, so a busy token's
    requests find it fresh and never wait. A request whose grant is past its TTL (the first after an
    idle spell) waits up to `stale_wait_s` for the re-check (shared by the requests of that moment):
    an answering control app decides it, so a revocation lands on the next request after `ttl_s`,
    busy or idle. When the control app does not answer in time the
    request goes on under the grant, for at most `grace_s` since the control app last confirmed it,
    and the re-check goes on in the background: a control-app restart costs the data plane at most
    `stale_wait_s` per token and TTL. Unknown tokens, denied ones and grants older than `grace_s`
    wait for the control app.
    """

    def __init__(
        self,
        verify: Verify,
        *,
        ttl_s: float = AUTH_TTL_S,
        denied_ttl_s: float = DENIED_TTL_S,
        grace_s: float = AUTH_GRACE_S,
        stale_wait_s: float = STALE_WAIT_S,
        limiter: FailureLimiter | None = None,
    ) -> None:
        self.verify = verify
        self.limiter = limiter
        self.ttl_s = ttl_s
        self.denied_ttl_s = denied_ttl_s
        self.grace_s = grace_s
        self.stale_wait_s = stale_wait_s
        self.verdicts: dict[str, _Verdict] = {}
        self.rechecks: dict[str, asyncio.Task[None]] = {}

    async def authorize(self, headers: dict[str, str]) -> None:
        """Raise the domain error (401/403/404; 429 after many failures from the request's client;
        503 when the control app cannot be asked) of the request's token, or return."""
        token = bearer_token(headers)
        token_hash = hashlib.sha256(token.encode()).hexdigest() if token else ""
        now = time.monotonic()
        verdict = self.verdicts.get(token_hash)
        if verdict is None or (
            verdict.recheck_at < now and (verdict.error is not None or now - verdict.verified_at > self.grace_s)
        ):
            verdict = await self._ask(token_hash)
        elif verdict.recheck_at < now:
            await asyncio.wait({self._recheck_task(token_hash)}, timeout=self.stale_wait_s)  # goes on, uncancelled
            verdict = self.verdicts.get(token_hash, verdict)
        elif verdict.error is None and verdict.recheck_at - self.ttl_s / 2 < now:
            self._recheck_task(token_hash)  # a busy token's grant is renewed before it is stale: nobody waits
        if verdict.error is not None:
            if self.limiter is not None:  # the client is looked up only for failures, off the usual path
                raise self.limiter.failed(client_of(headers, None), verdict.error)
            raise verdict.error

    async def _ask(self, token_hash: str) -> _Verdict:
        try:
            await self.verify(token_hash)
            verdict = _Verdict(time.monotonic() + self.ttl_s, time.monotonic(), None)
        except NotReady:
            raise  # the control app is away: nothing learnt about the token, nothing cached
        except CorralError as exc:
            verdict = _Verdict(time.monotonic() + self.denied_ttl_s, time.monotonic(), exc)
        if len(self.verdicts) >= MAX_ENTRIES:
            self.verdicts.clear()
        self.verdicts[token_hash] = verdict
        return verdict

    def _recheck_task(self, token_hash: str) -> asyncio.Task[None]:
        recheck = self.rechecks.get(token_hash)
        if recheck is None:
            recheck = asyncio.get_running_loop().create_task(self._recheck(token_hash))
            self.rechecks[token_hash] = recheck
        return recheck

    async def _recheck(self, token_hash: str) -> None:
        try:
            await self._ask(token_hash)
        except NotReady:
            pass  # keep the grant (within grace_s); the next request after recheck_at asks again
        except Exception:
            log.exception("re-checking a token with the control app failed")
        finally:
            self.rechecks.pop(token_hash, None)


class FailureLimiter:
    """Counts failed authentications per client: past `max_failures` in `window_s`, the next
    failures are a 429 with Retry-After instead of a 401. Only failures are limited, so a valid
    token is never refused because another caller behind the same address guessed wrong."""

    def __init__(self, max_failures: int = MAX_FAILURES, window_s: float = FAILURE_WINDOW_S) -> None:
        self.max_failures = max_failures
        self.window_s = window_s
        self.failures: dict[str, tuple[float, int]] = {}  # client -> (window start, failures in it)

    def failed(self, client: str, error: CorralError) -> CorralError:
        """Record a failure of `client`; the error to answer with (`error`, or a TooManyAttempts)."""
        now = time.monotonic()
        started, count = self.failures.get(client, (now, 0))
        if now - started > self.window_s:
            started, count = now, 0
        if len(self.failures) >= MAX_ENTRIES:
            self.failures.clear()
        self.failures[client] = (started, count + 1)
        if count + 1 > self.max_failures:
            wait = max(1, int(started + self.window_s - now) + 1)
            return TooManyAttempts(
                f"too many failed authentications from this client ({count + 1} in {self.window_s:.0f} s): "
                f"wait {wait} s, then retry with a valid token",
                retry_after_s=wait,
            )
        return error


def client_of(headers: dict[str, str], peer: str | None) -> str:
    """Who a request comes from: the first X-Forwarded-For address, else the connection's peer."""
    forwarded = headers.get("x-forwarded-for", "")
    return forwarded.split(",")[0].strip() or peer or "unknown"
