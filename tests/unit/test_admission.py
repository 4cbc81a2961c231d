"""serving.admission through the HTTP edge: a bounded queue (503 + Retry-After), deadlines (504),
bad X-Corral-Timeout-Ms (400), and the event loop's delay as a reason to refuse."""

from __future__ import annotations

import asyncio
import hashlib
import time
from typing import Any

import orjson
import pyarrow as pa
import pytest

from pipelines.errors import Overloaded
from serving.admission import Admission
from serving.auth import AuthCache
from serving.dataplane import DataPlane
from serving.http import HttpEdge
from tests.unit.test_dataplane import PREFIX, RECORDS, TOKEN, config

ROW = orjson.dumps([{"x": 1.0}])


class Gate:
    """A remote segment that holds every request until released (a slow own step)."""

    def __init__(self) -> None:
        self.entered = 0
        self.release = asyncio.Event()

    async def __call__(self, table: pa.Table) -> pa.Table:
        self.entered += 1
        await self.release.wait()
        return table.append_column("y", table["x"])


def make(segment: Any, **limits: Any) -> tuple[HttpEdge, Admission]:
    plane = DataPlane("p", {"main": [segment]}, log=lambda record: None)
    plane.apply(config(weights={"main": 1}))
    allowed = hashlib.sha256(TOKEN.encode()).hexdigest()

    async def verify(token_hash: str) -> None:
        assert token_hash == allowed

    admission = Admission(**({"max_queued_requests": 2, "max_queue_delay_s": 1.0, "default_timeout_s": 5.0} | limits))
    edge = HttpEdge(plane, AuthCache(verify), prefix=PREFIX, max_payload_bytes=10_000, admission=admission)
    return edge, admission


async def infer(edge: HttpEdge, **headers: str) -> tuple[int, dict[str, str], dict[str, Any]]:
    status, reply_headers, body = await edge.handle("POST", PREFIX + "/infer", {**RECORDS, **headers}, ROW)
    return status, reply_headers, orjson.loads(body)


def test_a_full_queue_refuses_at_once_with_503_and_retry_after_then_admits_again() -> None:
    async def scenario() -> None:
        gate = Gate()
        edge, admission = make(gate, max_queued_requests=2)
        held = [asyncio.create_task(infer(edge)) for _ in range(2)]
        while gate.entered < 2:
            await asyncio.sleep(0.001)
        started = time.perf_counter()
        status, headers, body = await infer(edge)
        assert time.perf_counter() - started < 0.5  # refused, not queued
        assert status == 503 and headers["retry-after"] == "1"
        assert "2 requests in flight" in body["error"] and "router.max_queued_requests" in body["error"]
        gate.release.set()
        assert [(await task)[0] for task in held] == [200, 200]
        assert (await infer(edge))[0] == 200
        assert admission.stats()["refused"] == 1 and admission.in_flight == 0

    asyncio.run(scenario())


def test_the_deadline_cancels_the_work_left_and_answers_504() -> None:
    async def scenario() -> None:
        gate = Gate()
        edge, admission = make(gate, default_timeout_s=0.05)
        status, _, body = await infer(edge)
        assert status == 504 and "deadline of 50 ms" in body["error"] and "X-Corral-Timeout-Ms" in body["error"]
        status, _, body = await infer(edge, **{"x-corral-timeout-ms": "20"})
        assert status == 504 and "deadline of 20 ms" in body["error"]
        assert admission.in_flight == 0  # a timed-out request gives its place back
        gate.release.set()
        status, _, body = await infer(edge, **{"x-corral-timeout-ms": "2000"})
        assert status == 200 and body == [{"x": 1.0, "y": 1.0}]

    asyncio.run(scenario())


@pytest.mark.parametrize("value", ["soon", "-5", "0", "1.5", "99999999999"])
def test_a_bad_timeout_header_is_a_400_that_says_what_to_send(value: str) -> None:
    async def scenario() -> None:
        gate = Gate()
        gate.release.set()
        edge, _ = make(gate)
        status, _, body = await infer(edge, **{"x-corral-timeout-ms": value})
        assert status == 400
        assert "X-Corral-Timeout-Ms must be a whole number of milliseconds" in body["error"]
        assert repr(value) in body["error"]

    asyncio.run(scenario())


def test_a_lagging_event_loop_refuses_new_requests_until_it_catches_up() -> None:
    async def scenario() -> None:
        admission = Admission(max_queued_requests=100, max_queue_delay_s=0.1, default_timeout_s=5.0)
        admission.admit()  # starts the loop-delay probe
        admission.release()
        await asyncio.sleep(0)  # the probe takes its first reading's start
        time.sleep(0.3)  # the loop is blocked, as by requests run on it back to back
        await asyncio.sleep(0.06)  # the probe wakes late and records the delay
        assert admission.loop_delay_s > 0.1
        with pytest.raises(Overloaded, match=r"requests wait \d+ ms to start"):
            admission.admit()
        assert admission.in_flight == 0  # a refused request holds no place
        await asyncio.sleep(0.15)  # the loop is free again: the next probes find no delay
        admission.admit()
        assert admission.in_flight == 1

    asyncio.run(scenario())


class Serial:
    """A segment that serves one request at a time, each taking `seconds` (a saturated step)."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.lock = asyncio.Lock()
        self.entered = 0

    async def __call__(self, table: pa.Table) -> pa.Table:
        self.entered += 1
        async with self.lock:
            await asyncio.sleep(self.seconds)
        return table.append_column("y", table["x"])


def test_a_request_whose_expected_wait_exceeds_its_deadline_is_shed_at_once_with_retry_after() -> None:
    async def scenario() -> None:
        serial = Serial(0.02)  # 50 requests per second at most
        edge, admission = make(serial, max_queued_requests=1000, default_timeout_s=10.0)
        backlog = [asyncio.create_task(infer(edge)) for _ in range(80)]  # 1.6 s of work queued at once
        await asyncio.sleep(0.3)  # a few completions: the replica now knows its rate
        assert admission.completion_rate is not None and admission.expected_wait_s() > 0.5
        entered = serial.entered
        status, headers, body = await infer(edge, **{"x-corral-timeout-ms": "500"})
        assert status == 503, body
        assert int(headers["retry-after"]) >= 1
        assert "waits about" in body["error"] and "X-Corral-Timeout-Ms" in body["error"]
        assert serial.entered == entered  # shed before any of its work started
        # A request with time enough is admitted and answered, behind the others.
        patient = await infer(edge, **{"x-corral-timeout-ms": "10000"})
        assert patient[0] == 200
        assert all(reply[0] == 200 for reply in await asyncio.gather(*backlog))

    asyncio.run(scenario())


def test_a_request_that_waited_past_its_deadline_before_the_router_read_it_is_refused_not_started() -> None:
    async def scenario() -> None:
        gate = Gate()
        edge, _ = make(gate)
        status, headers, body = await edge_reply(edge, arrived_at=time.monotonic() - 2.0, timeout_ms="1000")
        assert status == 503 and headers["retry-after"] == "1"
        assert "0 ms left of this one's deadline" in body["error"]
        assert gate.entered == 0

    asyncio.run(scenario())


async def edge_reply(edge: HttpEdge, *, arrived_at: float, timeout_ms: str) -> tuple[int, dict[str, str], Any]:
    headers = {**RECORDS, "x-corral-timeout-ms": timeout_ms}
    status, reply_headers, body = await edge.handle("POST", PREFIX + "/infer", headers, ROW, arrived_at)
    return status, reply_headers, orjson.loads(body)


def test_the_budget_counts_from_arrival_less_the_event_loops_delay() -> None:
    admission = Admission(max_queued_requests=10, max_queue_delay_s=1.0, default_timeout_s=5.0)
    now = time.monotonic()
    assert 0.25 < admission.remaining_s(0.8, arrived_at=now - 0.5) <= 0.3 + 1e-9
    admission.loop_delay_s = 0.4  # as the probe would have measured it
    assert admission.arrival() <= time.monotonic() - 0.4
    assert 0.55 < admission.remaining_s(1.0, admission.arrival()) <= 0.6 + 1e-9  # float rounding of the subtraction


def test_with_too_few_recent_completions_nothing_is_shed_on_the_wait_estimate() -> None:
    async def scenario() -> None:
        gate = Gate()
        edge, admission = make(gate, max_queued_requests=100)
        held = [asyncio.create_task(infer(edge, **{"x-corral-timeout-ms": "60000"})) for _ in range(20)]
        await asyncio.sleep(0.2)  # probes tick, but nothing completes: the rate is unknown
        assert admission.completion_rate is None and admission.expected_wait_s() == 0.0
        late = asyncio.create_task(infer(edge, **{"x-corral-timeout-ms": "100"}))
        await asyncio.sleep(0.01)
        assert gate.entered == 21  # admitted and started, not shed
        gate.release.set()
        assert (await late)[0] == 200
        assert all(reply[0] == 200 for reply in await asyncio.gather(*held))

    asyncio.run(scenario())
