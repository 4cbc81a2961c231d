"""serving.load: the CPU meter and the replica rule routers autoscale by."""

from __future__ import annotations

import pytest

from serving.load import CpuMeter, desired_replicas


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_cpu_meter_reads_cpu_seconds_per_wall_second_since_the_last_reading() -> None:
    wall, cpu = FakeClock(), FakeClock()
    meter = CpuMeter(wall, cpu)
    wall.now, cpu.now = 2.0, 1.8
    assert meter.read() == pytest.approx(0.9)
    wall.now, cpu.now = 4.0, 1.9  # idle since: only what was used since the previous reading counts
    assert meter.read() == pytest.approx(0.05)
    assert meter.read() == 0.0  # no time has passed


def test_a_busy_router_wants_more_replicas_though_serve_sees_no_ongoing_requests() -> None:
    # one replica at 95% of a core, 0 requests in flight when sampled (the router's usual picture)
    assert desired_replicas(1, ongoing=0.0, target_ongoing=8, busy=[0.95], busy_target=0.7) == pytest.approx(0.95 / 0.7)
    # two replicas at half a core each: stay at two
    assert 1 < desired_replicas(2, ongoing=0.0, target_ongoing=8, busy=[0.5, 0.5], busy_target=0.7) <= 2
    # idle: one is enough
    assert desired_replicas(2, ongoing=0.0, target_ongoing=8, busy=[0.02, 0.01], busy_target=0.7) < 1


def test_ongoing_requests_still_count_and_unreported_replicas_count_as_the_mean() -> None:
    # a router waiting on own steps: many requests in flight, little CPU
    assert desired_replicas(1, ongoing=24, target_ongoing=8, busy=[0.1], busy_target=0.7) == pytest.approx(3)
    # a new replica has not reported yet: the one that has stands for both
    assert desired_replicas(2, ongoing=0, target_ongoing=8, busy=[0.7], busy_target=0.7) == pytest.approx(2)
    assert desired_replicas(0, ongoing=5, target_ongoing=8, busy=[], busy_target=0.7) == 0.0
