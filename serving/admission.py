"""Admission at a router replica: a bounded queue and request deadlines measured from arrival.

A router refuses work it cannot finish in time (503 + Retry-After) instead of letting every
caller wait: at most `max_queued_requests` requests in flight per replica, none admitted while the
event loop runs more than `max_queue_delay_s` behind (requests a CPU-bound replica has read but
not started wait there, where no counter sees them), and none whose expected wait already exceeds
what is left of its deadline: shed early rather than answer late.

Each request has a deadline, from `X-Corral-Timeout-Ms` or the default, counted from its arrival:
the time the replica read it, less the event loop's current delay (how long a request read now
waited behind others before its handler ran). The expected wait is the requests in flight ahead of
it divided by the replica's recent completion rate (Little's law: backlog x the recent time
between completions); with too few recent completions to tell, nothing is refused on that ground.
Past the deadline the work left is cancelled and the caller gets a 504. A synchronous inline step
already running in a worker thread cannot be interrupted: it runs to its end, its request's later
steps never start, and the thread pool (router.inline_threads, 2) bounds how many such steps run
at once; requests queued for those threads are in flight here, so they count in the backlog.
Shadow calls are not admitted here: they have their own bounded backlog (serving.shadows).
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import deque
from collections.abc import Mapping

from pipelines.errors import BadPayload, Overloaded
from serving.load import BacklogMeter

TIMEOUT_HEADER = "x-corral-timeout-ms"
MAX_TIMEOUT_MS = 3_600_000
LAG_PROBE_S = 0.05  # how often the event loop's delay is measured
RATE_WINDOW_S = 1.0  # completions over this long give the recent completion rate
MIN_RATE_SAMPLES = 4  # fewer completions in the window: no estimate, so no refusal on that ground


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
        self.completed = 0  # requests released since the replica started
        self.completion_rate: float | None = None  # per second, over the last RATE_WINDOW_S; None: unknown
        self._completions: deque[tuple[float, int]] = deque()  # (probe time, completed) samples
        self.load = BacklogMeter()  # also counts arrivals: the probe rests when there are none
        self.watcher: asyncio.Task[None] | None = None

    def timeout_s(self, headers: dict[str, str]) -> float:
        """The request's time budget in seconds: its X-Corral-Timeout-Ms header, else the default."""
        return request_timeout_s(headers, self.default_timeout_s)

    def arrival(self) -> float:
        """When a request read now arrived (time.monotonic): now, less the loop's current delay."""
        return time.monotonic() - self.loop_delay_s

    def remaining_s(self, timeout_s: float, arrived_at: float) -> float:
        """What is left of a `timeout_s` budget that started when the request arrived (`arrived_at`,
        time.monotonic, as `arrival()` gives it)."""
        return timeout_s - (time.monotonic() - arrived_at)

    def expected_wait_s(self) -> float:
        """How long a request admitted now would wait behind those in flight (0 when unknown)."""
        rate = self.completion_rate
        if not rate or self.in_flight == 0:
            return 0.0
        return self.in_flight / rate

    def admit(self, remaining_s: float | None = None) -> None:
        """Take a place in the queue (give it back with `release`), or raise Overloaded (503).
        `remaining_s` is what is left of the request's deadline (see `remaining_s`).
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
        if remaining_s is not None:
            wait = self.expected_wait_s()
            if remaining_s <= 0 or wait > remaining_s:
                self.refused += 1
                left = max(0.0, remaining_s) * 1000
                raise Overloaded(
                    f"pipeline is overloaded: a request here waits about {wait * 1000:.0f} ms to be served "
                    f"({self.in_flight} in flight), more than the {left:.0f} ms left of this one's deadline, so it "
                    "was not started: retry after the Retry-After seconds, allow more time with "
                    "X-Corral-Timeout-Ms, or allow more replicas",
                    retry_after_s=max(1, math.ceil(wait - max(0.0, remaining_s))),
                )
        self.in_flight += 1

    def release(self) -> None:
        self.in_flight -= 1
        self.completed += 1

    def backlog(self) -> float:
        """Mean requests in flight or waiting for the event loop since the previous call (autoscaling)."""
        return self.load.read(self.in_flight)

    def stats(self) -> dict[str, float | None]:
        return {
            "in_flight": self.in_flight,
            "refused": self.refused,
            "loop_delay_ms": self.loop_delay_s * 1000,
            "completions_per_s": self.completion_rate,
            "expected_wait_ms": self.expected_wait_s() * 1000,
        }

    def _measure_completion_rate(self, now: float) -> None:
        samples = self._completions
        samples.append((now, self.completed))
        while len(samples) > 2 and now - samples[1][0] >= RATE_WINDOW_S:
            samples.popleft()
        then, completed = samples[0]
        done = self.completed - completed
        self.completion_rate = done / (now - then) if done >= MIN_RATE_SAMPLES and now > then else None

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
            self._measure_completion_rate(time.perf_counter())
            idle = self.load.arrivals == arrivals and self.in_flight == 0
            idle_probes = idle_probes + 1 if idle else 0
        self.loop_delay_s = 0.0
        self.completion_rate = None  # after an idle spell the past says nothing about the next burst
        self._completions.clear()
