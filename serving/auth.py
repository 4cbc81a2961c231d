"""Bearer-token checks at a router, cached so a request pays a dict lookup, not a control-plane call."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Awaitable, Callable

from pipelines.errors import CorralError

# verify(token_hash) returns when the token may use this pipeline, raises a CorralError otherwise.
Verify = Callable[[str], Awaitable[None]]
AUTH_TTL_S = 30.0
DENIED_TTL_S = 2.0
MAX_ENTRIES = 10_000


def bearer_token(headers: dict[str, str]) -> str:
    header = headers.get("authorization", "")
    return header[7:].strip() if header[:7].lower() == "bearer " else ""


class AuthCache:
    """Verdicts of `verify` per token hash: granted ones for `ttl_s`, denied ones for `denied_ttl_s`."""

    def __init__(self, verify: Verify, *, ttl_s: float = AUTH_TTL_S, denied_ttl_s: float = DENIED_TTL_S) -> None:
        self.verify = verify
        self.ttl_s = ttl_s
        self.denied_ttl_s = denied_ttl_s
        self.verdicts: dict[str, tuple[float, CorralError | None]] = {}

    async def authorize(self, headers: dict[str, str]) -> None:
        """Raise the domain error (401/403/404) of the request's token, or return."""
        token = bearer_token(headers)
        token_hash = hashlib.sha256(token.encode()).hexdigest() if token else ""
        now = time.monotonic()
        verdict = self.verdicts.get(token_hash)
        if verdict is None or verdict[0] < now:
            try:
                await self.verify(token_hash)
                verdict = (now + self.ttl_s, None)
            except CorralError as exc:
                verdict = (now + self.denied_ttl_s, exc)
            if len(self.verdicts) >= MAX_ENTRIES:
                self.verdicts.clear()
            self.verdicts[token_hash] = verdict
        if verdict[1] is not None:
            raise verdict[1]
