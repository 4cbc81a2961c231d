"""How loaded a router replica is, for autoscaling.

Serve scales on ongoing requests, which a router cannot show: it runs a small request from start
to finish on its event loop without yielding, so whenever Serve samples there is at most one in
flight and the backlog waits unseen on the loop (measured: 0 ongoing at 16 clients and 100% CPU).
So routers report their backlog as Little's law gives it: the requests in flight, plus the
arrival rate times how long a request waits for the loop (serving.admission measures that delay).
At one client there is no wait and no backlog, so a second replica, which would only add a
process to the same cores, is not asked for (measured: 1 client on 2 replicas, 0.7x of 1).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable

BACKLOG_METRIC = "corral_backlog"  # requests in flight or waiting for the event loop, one replica


class BacklogMeter:
    """`read()`: the mean backlog since the previous reading, from a few running totals."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.arrivals = 0  # requests admitted
        self.delay_sum_s = 0.0  # event-loop delays measured ...
        self.delay_probes = 0  # ... by this many probes
        self.last = (clock(), 0, 0.0, 0)

    def read(self, in_flight: int) -> float:
        now = (self.clock(), self.arrivals, self.delay_sum_s, self.delay_probes)
        (then, arrivals, delay_sum, probes), self.last = self.last, now
        elapsed = now[0] - then
        if elapsed <= 0:
            return float(in_flight)
        rate = (now[1] - arrivals) / elapsed
        probed = now[3] - probes
        mean_delay = (now[2] - delay_sum) / probed if probed else 0.0
        return in_flight + rate * mean_delay


def desired_replicas(current: int, ongoing: float, backlogs: Iterable[float], target_ongoing: float) -> float:
    """Replicas wanted: Serve's rule (requests per replica over their target), counting for each
    replica the larger of what Serve saw in flight and the backlog it reported."""
    if current <= 0 or target_ongoing <= 0:
        return 0.0
    reported = list(backlogs)
    backlog = sum(reported)
    if reported and len(reported) < current:  # a new replica has not reported yet: count it as the mean
        backlog *= current / len(reported)
    return max(ongoing, backlog) / target_ongoing
