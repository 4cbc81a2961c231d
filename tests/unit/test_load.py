"""serving.load: the backlog a router reports, and the replica rule routers autoscale by."""

from __future__ import annotations

import pytest

from serving.load import BacklogMeter, desired_replicas


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_backlog_is_in_flight_plus_arrival_rate_times_the_wait_for_the_loop() -> None:
    clock = FakeClock()
    meter = BacklogMeter(clock)
    clock.now = 2.0
    meter.arrivals += 1800  # 900 requests/s
    meter.delay_sum_s, meter.delay_probes = 0.016 * 40, 40  # each waited 16 ms for the loop
    assert meter.read(in_flight=1) == pytest.approx(1 + 900 * 0.016)
    clock.now = 4.0  # one client: requests never wait for the loop
    meter.arrivals += 1800
    meter.delay_probes += 40
    assert meter.read(in_flight=0) == pytest.approx(0.0)
    assert meter.read(in_flight=3) == 3.0  # no time has passed: what is in flight


def test_a_backlogged_router_wants_more_replicas_though_serve_sees_no_ongoing_requests() -> None:
    assert desired_replicas(1, ongoing=0.0, backlogs=[15.0], target_ongoing=8) == pytest.approx(15 / 8)
    assert desired_replicas(1, ongoing=0.0, backlogs=[0.2], target_ongoing=8) < 1  # one client: stay at one
    assert 1 < desired_replicas(2, ongoing=0.0, backlogs=[5.0, 5.0], target_ongoing=8) <= 2


def test_serves_count_still_counts_and_unreported_replicas_count_as_the_mean() -> None:
    # a router waiting on own steps: Serve sees its requests in flight
    assert desired_replicas(1, ongoing=24, backlogs=[1.0], target_ongoing=8) == pytest.approx(3)
    # a new replica has not reported yet: the one that has stands for both
    assert desired_replicas(2, ongoing=0, backlogs=[8.0], target_ongoing=8) == pytest.approx(2)
    assert desired_replicas(0, ongoing=5, backlogs=[], target_ongoing=8) == 0.0
