"""Admission at a router replica: a bounded queue and request deadlines.

A router refuses work it cannot start soon (503 + Retry-After) instead of letting every caller
wait: at most `max_queued_requests` requests in flight per replica, and none admitted while the
event loop runs more than `max_queue_delay_s` behind (requests a CPU-bound replica has read but
not started wait there, where no counter sees them). Each admitted request has a deadline, from
`X-Corral-Timeout-Ms` or the default; past it the work left is cancelled and the caller gets a 504.
Shadow calls are not admitted here: they have their own bounded backlog (serving.shadows).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping

from pipelines.errors import BadPayload, Overloaded
from serving.load import BacklogMeter

TIMEOUT_HEADER = "x-corral-timeout-ms"
MAX_TIMEOUT_MS = 3_600_000
LAG_PROBE_S = 0.05  # how often the event loop's delay is measured


def request_timeout_s(headers: Mapping[str, str], default_s: float) -> float:
    """A request's time budget in seconds: its X-Corral-Timeout-Ms header (keys lower-case, or a
    case-insensitive mapping such as Starlette's), else `default_s`."""
    raw = headers.get(TIMEOUT_HEADER)
    if raw is None:
        return default_s
    if not raw.strip().isdigit() or not 0 < int(raw) <= MAX_TIMEOUT_MS:
        raise BadPayload(
            f"X-Corral-Timeout-Ms must be a whole number of milliseconds from 1 to {MAX_TIMEOUT_MS}, "
            f"not {raw!r}: send for example X-Corral-Timeout-Ms: 500, or leave it out for the default"
        )
    return int(raw) / 1000


class Admission:
    """Counts a replica's requests in flight and watches its event loop's delay."""

    def __init__(self, *, max_queued_requests: int, max_queue_delay_s: float, default_timeout_s: float) -> None:
        self.max_queued_requests = max_queued_requests
        self.max_queue_delay_s = max_queue_delay_s
        self.default_timeout_s = default_timeout_s
        self.in_flight = 0
        self.loop_delay_s = 0.0
        self.refused = 0
        self.load = BacklogMeter()  # also counts arrivals: the probe rests when there are none
        self.watcher: asyncio.Task[None] | None = None

    def timeout_s(self, headers: dict[str, str]) -> float:
        """The request's time budget in seconds: its X-Corral-Timeout-Ms header, else the default."""
        return request_timeout_s(headers, self.default_timeout_s)

    def admit(self) -> None:
        """Take a place in the queue (give it back with `release`), or raise Overloaded (503).
        A pair of calls, not a context manager: this runs for every request."""
        self.load.arrivals += 1
        if self.watcher is None or self.watcher.done():
            self.watcher = asyncio.get_running_loop().create_task(self._measure_loop_delay())
        if self.in_flight >= self.max_queued_requests:
            self.refused += 1
            raise Overloaded(
                f"pipeline is overloaded: {self.in_flight} requests in flight in this replica (the limit, "
                "router.max_queued_requests): retry after the Retry-After seconds, or allow more replicas",
                retry_after_s=1,
            )
        if self.loop_delay_s > self.max_queue_delay_s:
            self.refused += 1
            raise Overloaded(
                f"pipeline is overloaded: requests wait {self.loop_delay_s * 1000:.0f} ms to start in this "
                f"replica (the limit is {self.max_queue_delay_s * 1000:.0f} ms, router.max_queue_delay_ms): "
                "retry after the Retry-After seconds, or allow more replicas",
                retry_after_s=1,
            )
        self.in_flight += 1

    def release(self) -> None:
        self.in_flight -= 1

    def backlog(self) -> float:
        """Mean requests in flight or waiting for the event loop since the previous call (autoscaling)."""
        return self.load.read(self.in_flight)

    def stats(self) -> dict[str, float]:
        return {"in_flight": self.in_flight, "refused": self.refused, "loop_delay_ms": self.loop_delay_s * 1000}

    async def _measure_loop_delay(self) -> None:
        """How late a timer fires is how long the callbacks queued before it took: the wait of a
        request read now. Measured every LAG_PROBE_S while there is traffic, then left to rest."""
        idle_probes = 0
        while idle_probes < 20:
            arrivals, started = self.load.arrivals, time.perf_counter()
            await asyncio.sleep(LAG_PROBE_S)
            delay = max(0.0, time.perf_counter() - started - LAG_PROBE_S)
            self.load.delay_sum_s += delay
            self.load.delay_probes += 1
            self.loop_delay_s = max(delay, self.loop_delay_s / 2)  # a backlog drains over a few probes
            idle = self.load.arrivals == arrivals and self.in_flight == 0
            idle_probes = idle_probes + 1 if idle else 0
        self.loop_delay_s = 0.0
