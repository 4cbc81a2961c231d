"""Fault injection for the integration tests: closed-loop clients that record every request, and
the pids of the real processes (Serve replicas, the controller) to SIGKILL."""

from __future__ import annotations

import os
import re
import signal
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import httpx

NOTICE_S = 1.0  # a request sent this soon after the kill may still have been routed to the dead process
HAPROXY_ERROR = "Internal Server Error"  # HAProxy's reply when the replica it forwarded to died


@dataclass(frozen=True)
class Call:
    started: float
    ended: float
    status: int  # 0: the connection failed (reset, refused)
    request_id: str | None
    detail: str

    @property
    def seconds(self) -> float:
        return self.ended - self.started


@dataclass
class Load:
    """`clients` threads, each sending `body` to `url` back to back on one keep-alive connection."""

    base_url: str
    url: str
    body: bytes
    headers: dict[str, str]
    clients: int = 8
    calls: list[Call] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)
    threads: list[threading.Thread] = field(default_factory=list)

    def __enter__(self) -> Load:
        self.threads = [threading.Thread(target=self._client, daemon=True) for _ in range(self.clients)]
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=60)

    def _client(self) -> None:
        with httpx.Client(base_url=self.base_url, timeout=30) as http:
            while not self.stop.is_set():
                started = time.monotonic()
                try:
                    reply = http.post(self.url, content=self.body, headers=self.headers)
                    call = Call(
                        started, time.monotonic(), reply.status_code, reply.headers.get("x-corral-request-id"),
                        reply.text[:300] if reply.status_code != 200 else "",
                    )  # fmt: skip
                except httpx.HTTPError as exc:
                    call = Call(started, time.monotonic(), 0, None, f"{type(exc).__name__}: {exc}"[:300])
                self.calls.append(call)

    def failed(self) -> list[Call]:
        return [c for c in self.calls if c.status != 200]

    def replied(self) -> list[Call]:
        return [c for c in self.calls if c.status == 200]

    def wait_ok(self, count: int, timeout_s: float = 60) -> None:
        """Until `count` requests succeeded since now (the load is flowing)."""
        before = len(self.replied())
        deadline = time.monotonic() + timeout_s
        while len(self.replied()) < before + count:
            assert time.monotonic() < deadline, f"no traffic got through: {self.failed()[-3:]}"
            time.sleep(0.05)


def serve_actor_pids(class_name: str) -> list[int]:
    """Pids of the live Ray actors of `class_name`, e.g. 'ServeReplica:<app>:<deployment>'."""
    from ray.util.state import list_actors

    actors = list_actors(filters=[("class_name", "=", class_name), ("state", "=", "ALIVE")], limit=1000)
    return sorted(int(a.pid) for a in actors if a.pid)


def replica_pids(app: str, deployment: str) -> list[int]:
    return serve_actor_pids(f"ServeReplica:{app}:{deployment}")


def kill(pid: int) -> float:
    """SIGKILL `pid`; returns when (time.monotonic)."""
    os.kill(pid, signal.SIGKILL)
    return time.monotonic()


def wait_replaced(find: Any, killed: int, count: int, timeout_s: float = 60) -> list[int]:
    """Until `find()` lists `count` live pids and the `killed` one is not among them."""
    deadline = time.monotonic() + timeout_s
    while True:
        pids = find()
        if len(pids) >= count and killed not in pids:
            return list(pids)
        assert time.monotonic() < deadline, f"no replacement process within {timeout_s:.0f} s (now {pids})"
        time.sleep(0.5)


def summary(name: str, load: Load, killed_at: float) -> str:
    """One line of measured figures (the README's "What happens when" table comes from these)."""
    failed = load.failed()
    statuses = sorted({c.status for c in failed})
    after = [c for c in load.replied() if c.started >= killed_at]
    first = min(c.ended for c in after) - killed_at if after else float("nan")
    line = (
        f"FAULT {name}: {len(failed)} failed {statuses}, first reply to a request sent after the kill "
        f"{first:.2f} s, longest wait {max(c.seconds for c in load.calls):.2f} s, {len(load.replied())} replied"
    )
    print(line)
    return line


def in_flight_only(calls: list[Call], killed_at: float) -> None:
    """Every failure was a request sent before the kill (or within NOTICE_S of it): a reset
    connection, Corral's 503 that says to retry, or, for a request whose router died under it,
    HAProxy's own error (Serve's HAProxy config turns its 502 into a plain-text 500)."""
    for call in calls:
        if call.status == 200:
            continue
        late = call.started - killed_at
        assert late < NOTICE_S, f"a request sent {late:.1f} s after the kill failed: {call}"
        assert call.status in (0, 500, 503), call
        if call.status == 503:
            assert re.search(r"retry|restarting|unavailable", call.detail, re.I), call
        if call.status == 500:
            assert call.detail == HAPROXY_ERROR, f"a 500 that did not come from HAProxy: {call}"


def back_within(load: Load, killed_at: float, bound_s: float) -> float:
    """Seconds from the kill to the first reply to a request sent after it; nothing fails past the bound."""
    load.wait_ok(50, timeout_s=bound_s + 30)
    first = min(c.ended for c in load.replied() if c.started >= killed_at) - killed_at
    assert first <= bound_s, f"the first request sent after the kill was answered {first:.1f} s after it"
    late = [c for c in load.failed() if c.ended > killed_at + bound_s]
    assert not late, f"requests still failed {bound_s:.0f} s after the kill: {late[:3]}"
    return first


def logged_rows(admin: Any, pipeline: str, since: datetime, expected: set[Any]) -> Any:
    """Log rows since `since`, once they hold `expected` or 20 s passed (the sink writes within ~1 s)."""
    deadline = time.monotonic() + 20
    while True:
        rows = admin.pipeline(pipeline).logs(start=since, limit=1_000_000)
        if expected <= set(rows.get("request_id", [])) or time.monotonic() > deadline:
            return rows
        time.sleep(1)


def logged_ids(admin: Any, pipeline: str, since: datetime, expected: set[Any]) -> set[Any]:
    return set(logged_rows(admin, pipeline, since, expected).get("request_id", []))


# A killed router loses the rows it had not sent to the log sink: those of its last flush interval
# (0.1 s, serving.log_buffer), plus those queued while a send waited for the sink's reply. Measured:
# the oldest lost row was replied 0.02-0.10 s before the kill; 1 s leaves room for a loaded machine.
# (A bound by count, from the reply rate, failed in CI: replies come in bursts right before a kill.)
LOSS_WINDOW_S = 1.0


def assert_only_the_last_flush_lost(load: Load, lost: set[Any], killed_at: float) -> str:
    """Every lost row was replied to in the last LOSS_WINDOW_S before the kill; returns a summary line."""
    replied = load.replied()
    ages = sorted((killed_at - c.ended for c in replied if c.request_id in lost), reverse=True)
    oldest = ages[0] if ages else 0.0
    line = f"{len(lost)} of {len(replied)} replied lost, the oldest replied {oldest:.2f} s before the kill"
    stale = [age for age in ages if age > LOSS_WINDOW_S]
    assert not stale, f"{line}: {len(stale)} replied more than {LOSS_WINDOW_S} s before it"
    return line
