"""A closed-loop overload client for the deadline tests: many keep-alive connections on one event loop.

Each client sends the same request again as soon as it has its reply, for a fixed time, and records
every reply's status, Retry-After header and client-seen seconds (send to last byte). A kept-alive
connection the server closed before reading the next request is reopened and the request sent
again (what HTTP clients do; HAProxy closes its connections when Serve reloads it), and counted. Raw asyncio
streams speaking just enough HTTP/1.1 (Content-Length replies, what Serve sends): httpx costs about
ten times the client CPU per request, and on two cores the client competes with the server.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from urllib.parse import urlsplit


@dataclass(frozen=True)
class Reply:
    status: int  # 0: the connection failed (reset, refused, cut)
    seconds: float
    retry_after: str | None
    error: str | None = None  # what failed, for status 0


async def _client(
    host: str, port: int, request: bytes, until: float, replies: list[Reply], timeout_s: float, stale: list[int]
) -> None:
    reader, writer = await asyncio.open_connection(host, port)
    reused = False
    try:
        while time.monotonic() < until:
            started = time.monotonic()
            try:
                writer.write(request)
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout_s)
                status, length, retry_after = _parse_head(head)
                await asyncio.wait_for(reader.readexactly(length), timeout_s)
            except asyncio.IncompleteReadError as exc:
                writer.close()
                reader, writer = await asyncio.open_connection(host, port)
                if reused and not exc.partial:
                    # The server closed this kept-alive connection before reading the request (HAProxy
                    # does when Serve reloads it): not a reply. Send it again, as HTTP clients do.
                    stale.append(1)
                    reused = False
                    continue
                replies.append(Reply(0, time.monotonic() - started, None, f"{type(exc).__name__}: {exc}"))
                continue
            except (OSError, asyncio.LimitOverrunError, TimeoutError) as exc:
                replies.append(Reply(0, time.monotonic() - started, None, f"{type(exc).__name__}: {exc}"))
                writer.close()
                reader, writer = await asyncio.open_connection(host, port)
                reused = False
                continue
            reused = True
            replies.append(Reply(status, time.monotonic() - started, retry_after))
    finally:
        writer.close()


def _parse_head(head: bytes) -> tuple[int, int, str | None]:
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    length, retry_after = 0, None
    for line in lines[1:]:
        name, _, value = line.partition(":")
        name = name.strip().lower()
        if name == "content-length":
            length = int(value.strip())
        elif name == "retry-after":
            retry_after = value.strip()
    return status, length, retry_after


def closed_loop(
    url: str, body: bytes, headers: dict[str, str], *, clients: int, seconds: float, timeout_s: float = 120.0
) -> tuple[list[Reply], int]:
    """`clients` connections each sending POST `url` back to back for `seconds`: every reply, and how
    many times a kept-alive connection was found closed (the request then sent again)."""
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    lines = [f"POST {parts.path} HTTP/1.1", f"Host: {host}:{port}", f"Content-Length: {len(body)}"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    request = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body
    replies: list[Reply] = []
    stale: list[int] = []

    async def run() -> None:
        until = time.monotonic() + seconds
        await asyncio.gather(
            *(_client(host, port, request, until, replies, timeout_s, stale) for _ in range(clients))
        )

    asyncio.run(run())
    return replies, len(stale)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q / 100 * len(ordered)))]
