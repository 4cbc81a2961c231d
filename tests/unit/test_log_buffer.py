"""The router's log buffer: batches rows, retries an unreachable sink, bounds its backlog (no Ray needed)."""

from __future__ import annotations

import asyncio

import pyarrow as pa

from serving.log_buffer import LogBuffer


def _rows(n: int, start: int = 0) -> pa.Table:
    return pa.table({"request_id": [f"r{i}" for i in range(start, start + n)]})


class Sink:
    def __init__(self, failures: int = 0) -> None:
        self.failures = failures
        self.calls: list[tuple[str, pa.Table]] = []

    async def __call__(self, kind: str, rows: pa.Table) -> None:
        if self.failures:
            self.failures -= 1
            raise ConnectionError("sink restarting")
        self.calls.append((kind, rows))


def test_rows_of_many_requests_go_in_one_call_per_kind() -> None:
    async def scenario() -> Sink:
        sink = Sink()
        buffer = LogBuffer(sink, delay_s=0.05)
        for i in range(10):
            buffer.add("inferences", _rows(1, i))
        buffer.add("shadows", _rows(2))
        await asyncio.sleep(0.2)
        assert buffer.stats() == {"rows_sent": 12, "rows_pending": 0}
        return sink

    sink = asyncio.run(scenario())
    assert [(kind, rows.num_rows) for kind, rows in sink.calls] == [("inferences", 10), ("shadows", 2)]
    assert sink.calls[0][1].column("request_id").to_pylist() == [f"r{i}" for i in range(10)]


def test_rows_survive_a_sink_that_fails_then_recovers() -> None:
    async def scenario() -> Sink:
        sink = Sink(failures=2)
        buffer = LogBuffer(sink, delay_s=0.01)
        buffer.add("inferences", _rows(3))
        assert not await buffer.flush()  # the first try fails: rows stay pending
        assert buffer.stats()["rows_pending"] == 3
        buffer.add("inferences", _rows(2, 3))
        await asyncio.sleep(1.5)  # one more failure, a back-off, then success
        assert buffer.stats()["rows_pending"] == 0
        return sink

    sink = asyncio.run(scenario())
    sent = [rid for _, rows in sink.calls for rid in rows.column("request_id").to_pylist()]
    assert sent == ["r0", "r1", "r2", "r3", "r4"]


def test_backlog_is_bounded_and_drops_are_counted() -> None:
    dropped: list[int] = []

    async def scenario() -> LogBuffer:
        buffer = LogBuffer(Sink(failures=1_000), delay_s=10, max_backlog_rows=5, on_drop=dropped.append)
        for i in range(4):
            buffer.add("inferences", _rows(2, 2 * i))
        return buffer

    buffer = asyncio.run(scenario())
    assert buffer.stats()["rows_pending"] <= 5
    assert sum(dropped) == buffer.stats()["rows_dropped"] == 4


def test_a_column_that_changes_type_is_sent_in_separate_batches() -> None:
    async def scenario() -> Sink:
        sink = Sink()
        buffer = LogBuffer(sink, delay_s=10)
        buffer.add("inferences", pa.table({"out.label": [1]}))
        buffer.add("inferences", pa.table({"out.label": ["one"]}))
        assert await buffer.flush()
        return sink

    assert [rows.column("out.label").to_pylist() for _, rows in asyncio.run(scenario()).calls] == [[1], ["one"]]
