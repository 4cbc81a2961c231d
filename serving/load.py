"""How loaded a router replica is, for autoscaling.

Serve scales on ongoing requests, which a router cannot show: it runs a small request from start
to finish on its event loop without yielding, so whenever Serve samples there is at most one in
flight and the backlog waits unseen in socket buffers (measured: 0 ongoing at 16 clients and
100% CPU). So routers also report the CPU their process used, and scale on whichever says more.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable

BUSY_METRIC = "corral_cpu_busy"  # CPU seconds per wall second of one router replica


class CpuMeter:
    """CPU seconds this process used per wall second since the previous reading (all threads)."""

    def __init__(
        self, wall: Callable[[], float] = time.monotonic, cpu: Callable[[], float] = time.process_time
    ) -> None:
        self.wall = wall
        self.cpu = cpu
        self.last = (wall(), cpu())

    def read(self) -> float:
        now = (self.wall(), self.cpu())
        (wall_then, cpu_then), self.last = self.last, now
        elapsed = now[0] - wall_then
        return max(0.0, (now[1] - cpu_then) / elapsed) if elapsed > 0 else 0.0


def desired_replicas(
    current: int, ongoing: float, target_ongoing: float, busy: Iterable[float], busy_target: float
) -> float:
    """Replicas wanted: the larger of Serve's rule (ongoing requests over their target per replica)
    and the CPU rule (the replicas' CPU use over `busy_target` cores each). Serve's rule still
    matters for routers that wait on `own` steps, whose requests do stay in flight."""
    if current <= 0:
        return 0.0
    by_requests = ongoing / target_ongoing if target_ongoing > 0 else 0.0
    readings = list(busy)
    by_cpu = sum(readings) / busy_target if readings and busy_target > 0 else 0.0
    # A replica that has not reported yet counts as loaded as the mean of those that have.
    if readings and len(readings) < current:
        by_cpu *= current / len(readings)
    return max(by_requests, by_cpu)
