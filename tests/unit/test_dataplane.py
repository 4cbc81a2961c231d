"""The router's transport-free core and HTTP edge, driven in-process with real steps (no Ray).

Remote segments are stood in for by plain async functions with the same contract (table in,
table out), the control app's token check by a dict of token hashes.
"""

from __future__ import annotations

import asyncio
import hashlib
import threading
import time
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from monitoring.log_schema import InferenceRecord, inference_table
from pipelines.errors import CorralError, Forbidden, InvalidInput, NotReady, Unauthenticated
from pipelines.live_config import RouterConfig
from pipelines.spec import TrafficSpec
from pipelines.step import build_step
from serving.auth import AuthCache
from serving.dataplane import DataPlane
from serving.http import PROBE_HEADER, HttpEdge
from serving.segments import CoalescingSegment, InlineSegment
from serving.shadows import ShadowOutcome

PREFIX = "/ws/w/v2/models/p"
TOKEN = "secret-token"
RECORDS = {"content-type": "application/json; format=pandas-records", "authorization": f"Bearer {TOKEN}"}


class Times:
    """y = x * factor: replies show which step object answered."""

    def __init__(self, factor: float) -> None:
        self.factor = factor

    def __call__(self, table: pa.Table) -> pa.Table:
        return table.append_column("y", pc.multiply(table["x"], self.factor))


class Raises:
    def __call__(self, table: pa.Table) -> pa.Table:
        raise RuntimeError("the step's own bug")


class DropsRows:
    def __call__(self, table: pa.Table) -> pa.Table:
        return table.slice(0, 0)


class ReturnsDict:
    def __call__(self, table: pa.Table) -> Any:
        return {"y": [1]}


class Sleeps:
    def __call__(self, table: pa.Table) -> pa.Table:
        time.sleep(0.5)
        return table.append_column("y", table["x"])


async def remote_plus_one(table: pa.Table) -> pa.Table:
    """A remote segment's contract: awaitable, table in, table out."""
    await asyncio.sleep(0)
    return table.set_column(table.schema.get_field_index("y"), "y", pc.add(table["y"], 1))


def config(**traffic: Any) -> RouterConfig:
    probe = hashlib.sha256(b"probe").hexdigest()
    return RouterConfig(version=3, traffic=TrafficSpec(**traffic), probe_hash=probe, config_id="c1")


def make(chains: dict[str, list[Any]], **traffic: Any) -> tuple[HttpEdge, list[InferenceRecord], list[tuple[int, str]]]:
    records: list[InferenceRecord] = []
    counted: list[tuple[int, str]] = []
    plane = DataPlane("p", chains, log=records.append)
    plane.apply(config(**({"weights": {next(iter(chains)): 1}} | traffic)))
    allowed = {hashlib.sha256(TOKEN.encode()).hexdigest()}

    async def verify(token_hash: str) -> None:
        if not token_hash:
            raise Unauthenticated("send a bearer token")
        if token_hash not in allowed:
            raise Forbidden("not yours")

    edge = HttpEdge(
        plane,
        AuthCache(verify),
        prefix=PREFIX,
        max_payload_bytes=10_000,
        count_request=lambda status, variant: counted.append((status, variant)),
    )
    return edge, records, counted


def post(
    edge: HttpEdge, rows: Any, headers: dict[str, str] = RECORDS, path: str = "/infer"
) -> tuple[int, dict[str, str], Any]:
    status, headers_out, body = asyncio.run(edge.handle("POST", PREFIX + path, headers, orjson.dumps(rows)))
    return status, headers_out, orjson.loads(body)


def test_inline_and_remote_segments_chain_and_the_request_is_logged_once() -> None:
    chain = [InlineSegment([("times", Times(2.0))]), remote_plus_one]
    edge, records, counted = make({"main": chain})
    status, headers, body = post(edge, [{"x": 1.0}, {"x": 2.0}])
    assert status == 200, body
    assert body == [{"x": 1.0, "y": 3.0}, {"x": 2.0, "y": 5.0}]
    assert headers["x-corral-variant"] == "main" and headers["x-corral-pipeline-version"] == "3"
    assert counted == [(200, "main")]
    (record,) = records
    assert record.variant == "main" and record.version == 3 and record.request_id == headers["x-corral-request-id"]
    assert record.outputs.column("y").to_pylist() == [3.0, 5.0]


@pytest.mark.parametrize(
    ("step", "message"),
    [
        (Raises(), "step 'bad' failed: RuntimeError: the step's own bug. Fix the step's code"),
        (DropsRows(), "step 'bad' returned 0 rows for 1 input rows: a step must return one row per input row"),
        (ReturnsDict(), "step 'bad' returned dict, not a pyarrow.Table: make the step return a table"),
    ],
)
def test_a_broken_inline_step_is_a_422_naming_it_and_the_next_request_is_served(step: Any, message: str) -> None:
    chains = {"main": [InlineSegment([("bad", step)])], "good": [InlineSegment([("t", Times(1.0))])]}
    edge, records, counted = make(chains)
    status, _, body = post(edge, [{"x": 1.0}])
    assert status == 422 and message in body["error"], body
    assert records == [] and counted == [(422, "")]
    edge.plane.apply(config(weights={"good": 1}))
    status, _, body = post(edge, [{"x": 1.0}])
    assert status == 200 and body == [{"x": 1.0, "y": 1.0}]


def test_a_missing_column_is_a_422_from_the_step_that_needs_it() -> None:
    select = build_step("pipelines.builtin:Select", {"columns": ["x"]})
    edge, _, _ = make({"main": [InlineSegment([("pre", select), ("t", Times(1.0))])]})
    status, _, body = post(edge, [{"z": 1.0}])
    assert status == 422 and "Select step: columns ['x'] are missing" in body["error"]


def test_tokens_are_checked_and_the_probe_skips_them_only_on_ready() -> None:
    edge, _, _ = make({"main": [InlineSegment([("t", Times(1.0))])]})
    assert post(edge, [{"x": 1.0}], headers={"content-type": RECORDS["content-type"]})[0] == 401
    assert post(edge, [{"x": 1.0}], headers={**RECORDS, "authorization": "Bearer other"})[0] == 403
    ready = asyncio.run(edge.handle("GET", PREFIX + "/ready", {PROBE_HEADER: "probe"}, b""))
    assert ready[0] == 200 and orjson.loads(ready[2])["config_id"] == "c1"
    assert asyncio.run(edge.handle("GET", PREFIX + "/ready", {PROBE_HEADER: "wrong"}, b""))[0] == 401


def test_version_paths_unknown_endpoints_and_oversized_bodies() -> None:
    edge, _, _ = make({"main": [InlineSegment([("t", Times(1.0))])]})
    assert post(edge, [{"x": 1.0}], path="/versions/3/infer")[0] == 200
    status, _, body = post(edge, [{"x": 1.0}], path="/versions/2/infer")
    assert status == 404 and "serves version 3, not 2" in body["error"]
    assert asyncio.run(edge.handle("DELETE", PREFIX, RECORDS, b""))[0] == 404
    status, _, body = post(edge, [{"x": 1.0}] * 2000)
    assert status == 413 and "CORRAL_MAX_PAYLOAD_BYTES" in body["error"]
    early = edge.refuse_early({"content-length": "20000"})
    assert early is not None and early[0] == 413


def test_not_ready_before_the_first_config() -> None:
    plane = DataPlane("p", {"main": [InlineSegment([("t", Times(1.0))])]}, log=lambda r: None)
    with pytest.raises(NotReady, match="starting"):
        asyncio.run(plane.infer(pa.table({"x": [1.0]})))


def test_traffic_naming_a_variant_the_app_lacks_is_refused_and_the_old_config_stays() -> None:
    edge, _, _ = make({"main": [InlineSegment([("t", Times(1.0))])]})
    with pytest.raises(ValueError, match=r"variants \['ghost'\]"):
        edge.plane.apply(config(weights={"ghost": 1}))
    assert edge.plane.config.traffic.weights == {"main": 1}


def test_key_split_by_header_or_column_is_sticky() -> None:
    chains = {v: [InlineSegment([("t", Times(k))])] for v, k in (("a", 1.0), ("b", 2.0))}
    plane = make(chains, weights={"a": 1, "b": 1}, key="customer")[0].plane

    def pick(table: pa.Table, header: str | None) -> str:
        return asyncio.run(plane.infer(table, plane.split_key(table, header))).variant

    picks = set()
    for i in range(40):
        key = f"c{i}"
        by_column = pick(pa.table({"x": [1.0], "customer": [key]}), None)
        assert by_column == pick(pa.table({"x": [1.0]}), key) == pick(pa.table({"x": [2.0], "customer": [key]}), None)
        picks.add(by_column)
    assert picks == {"a", "b"}


def test_shadows_get_the_request_but_never_its_reply_or_its_threads() -> None:
    async def scenario() -> tuple[float, list[ShadowOutcome], Any]:
        chains = {
            "main": [InlineSegment([("t", Times(2.0))])],
            "slow": [InlineSegment([("s", Sleeps())])],
            "boom": [InlineSegment([("b", Raises())])],
        }
        plane = DataPlane("p", chains, log=lambda r: None)
        outcomes: list[ShadowOutcome] = []
        plane.shadows.listeners.append(outcomes.append)
        plane.apply(config(weights={"main": 1}, shadows=["slow", "boom"]))
        started = time.perf_counter()
        # more slow shadows than the shadow pool has threads: the primary must not wait for them
        replies = await asyncio.gather(*(plane.infer(pa.table({"x": [float(i)]})) for i in range(12)))
        elapsed = time.perf_counter() - started
        await plane.shadows.drain(timeout_s=10)
        return elapsed, outcomes, replies

    elapsed, outcomes, replies = asyncio.run(scenario())
    assert elapsed < 0.5  # a slow shadow takes 0.5 s a call
    assert [r.outputs.column("y").to_pylist() for r in replies] == [[2.0 * i] for i in range(12)]
    kinds = sorted((o.variant, o.kind) for o in outcomes)
    assert kinds == sorted([("slow", "ok")] * 12 + [("boom", "error")] * 12)


def test_predict_is_neither_logged_nor_mirrored_and_names_unknown_variants() -> None:
    edge, records, _ = make({"main": [InlineSegment([("t", Times(3.0))])]}, shadows=[])
    out = asyncio.run(edge.plane.predict(pa.table({"x": [1.0]}), "main"))
    assert out.column("y").to_pylist() == [3.0] and records == []
    with pytest.raises(CorralError, match=r"no variant 'nope': use one of \['main'\]"):
        asyncio.run(edge.plane.predict(pa.table({"x": [1.0]}), "nope"))


def test_a_swapped_step_serves_the_next_request_while_one_in_flight_finishes_on_the_old() -> None:
    release = threading.Event()

    class Gate(Times):
        def __call__(self, table: pa.Table) -> pa.Table:
            release.wait(5)
            return super().__call__(table)

    select = build_step("pipelines.builtin:Select", {"columns": ["x"]})
    segment = InlineSegment([("pre", select), ("model", Gate(1.0))])

    async def scenario() -> tuple[pa.Table, pa.Table]:
        in_flight = asyncio.ensure_future(segment(pa.table({"x": [1.0]})))
        await asyncio.sleep(0.1)
        segment.replace("model", Times(5.0))
        release.set()
        return await in_flight, await segment(pa.table({"x": [1.0]}))

    old, new = asyncio.run(scenario())
    assert old.column("y").to_pylist() == [1.0] and new.column("y").to_pylist() == [5.0]
    with pytest.raises(KeyError):
        segment.replace("ghost", Times(1.0))


def test_auth_cache_asks_once_per_token_and_remembers_denials_briefly() -> None:
    calls: list[str] = []

    async def verify(token_hash: str) -> None:
        calls.append(token_hash)
        if token_hash != hashlib.sha256(b"ok").hexdigest():
            raise Unauthenticated("unknown token")

    cache = AuthCache(verify, denied_ttl_s=0.05)

    async def scenario() -> None:
        for _ in range(3):
            await cache.authorize({"authorization": "Bearer ok"})
        for _ in range(2):
            with pytest.raises(Unauthenticated):
                await cache.authorize({"authorization": "Bearer bad"})
        await asyncio.sleep(0.06)
        with pytest.raises(Unauthenticated):
            await cache.authorize({"authorization": "bearer bad"})

    asyncio.run(scenario())
    assert len(calls) == 3  # ok once, bad once, bad again after its denial expired


def test_log_rows_built_per_flush_equal_the_rows_built_per_request() -> None:
    from datetime import UTC, datetime

    t = datetime(2026, 12, 1, 10, 0, 0, 123456, tzinfo=UTC)
    records = [
        InferenceRecord(t, f"r{i}", 2, "main", pa.table({"x": [1.0] * n}), pa.table({"y": [2.0] * n}), 0.5 + n)
        for i, n in enumerate((1, 2, 3))
    ]
    records.append(InferenceRecord(t, "other", 2, "b", pa.table({"x": [1]}), pa.table({"y": ["s"]}), 1.0))
    per_request = [r.rows() for r in records]  # what the router built per request before
    built = inference_table(records)
    assert len(built) == 2  # out.y changed type: two tables
    assert built[0].equals(pa.concat_tables(per_request[:3]))
    assert all(column.num_chunks == 1 for column in built[0].columns)  # one chunk, not one per request
    assert built[1].equals(per_request[3])


class CountingRemote:
    """A remote segment stand-in that takes 20 ms a call and records the batch sizes it was sent."""

    def __init__(self) -> None:
        self.calls: list[int] = []

    async def __call__(self, table: pa.Table) -> pa.Table:
        self.calls.append(table.num_rows)
        await asyncio.sleep(0.02)
        if pc.any(pc.less(table["x"], 0)).as_py():
            raise InvalidInput("x must be 0 or more")
        return table.append_column("y", pc.multiply(table["x"], 10))


def test_coalescing_sends_concurrent_requests_as_one_batch_and_slices_the_reply() -> None:
    remote = CountingRemote()
    segment = CoalescingSegment(remote, max_in_flight=1)

    async def scenario() -> list[pa.Table]:
        return await asyncio.gather(*(segment(pa.table({"x": [float(i)] * (i % 3 + 1)})) for i in range(10)))

    replies = asyncio.run(scenario())
    assert [r.column("y").to_pylist() for r in replies] == [[10.0 * i] * (i % 3 + 1) for i in range(10)]
    assert remote.calls[0] == 1 and len(remote.calls) == 2  # the first alone, the other nine together
    assert sum(remote.calls) == sum(i % 3 + 1 for i in range(10))


def test_coalescing_fails_only_the_bad_request_of_a_batch() -> None:
    remote = CountingRemote()
    segment = CoalescingSegment(remote, max_in_flight=1)

    async def scenario() -> list[Any]:
        xs = [1.0, 2.0, -1.0, 3.0]
        return await asyncio.gather(*(segment(pa.table({"x": [x]})) for x in xs), return_exceptions=True)

    first, ok, bad, also_ok = asyncio.run(scenario())
    assert isinstance(bad, InvalidInput) and "x must be 0 or more" in bad.message
    assert [t.column("y").to_pylist() for t in (first, ok, also_ok)] == [[10.0], [20.0], [30.0]]


def test_coalescing_keeps_requests_of_other_schemas_apart() -> None:
    remote = CountingRemote()
    segment = CoalescingSegment(remote, max_in_flight=1)

    async def scenario() -> list[pa.Table]:
        tables = [pa.table({"x": [1.0]}), pa.table({"x": [2.0]}), pa.table({"x": [3.0], "k": ["a"]})]
        tables.append(pa.table({"x": [4.0]}))
        return await asyncio.gather(*(segment(t) for t in tables))

    replies = asyncio.run(scenario())
    assert [r.column_names for r in replies] == [["x", "y"], ["x", "y"], ["x", "k", "y"], ["x", "y"]]
    assert remote.calls == [1, 2, 1]  # 2.0 and 4.0 together; the one with a key column alone


def test_inline_steps_report_their_latency_by_name() -> None:
    seen: list[tuple[str, float]] = []
    select = build_step("pipelines.builtin:Select", {"columns": ["x"]})
    segment = InlineSegment([("pre", select), ("slow", Sleeps())], observe=lambda name, ms: seen.append((name, ms)))
    asyncio.run(segment(pa.table({"x": [1.0], "z": [2.0]})))
    assert [name for name, _ in seen] == ["pre", "slow"]
    assert seen[1][1] >= 500 > seen[0][1]


def test_a_sync_segment_runs_on_the_calling_thread_and_refuses_async_steps() -> None:
    select = build_step("pipelines.builtin:Select", {"columns": ["x"]})
    segment = InlineSegment([("pre", select), ("t", Times(4.0))])
    assert segment.is_sync
    assert segment.run_sync(pa.table({"x": [1.0], "z": [0.0]})).to_pydict() == {"x": [1.0], "y": [4.0]}

    class Async:
        async def __call__(self, table: pa.Table) -> pa.Table:
            return table

    mixed = InlineSegment([("pre", select), ("a", Async())])
    assert not mixed.is_sync
    with pytest.raises(TypeError, match="await the segment"):
        mixed.run_sync(pa.table({"x": [1.0]}))
