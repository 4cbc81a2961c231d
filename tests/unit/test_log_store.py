"""The inference-log store: Parquet partitions, DuckDB queries, shadow joins, compaction."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from monitoring.log_schema import inference_rows, shadow_rows, with_anomalies
from monitoring.log_store import INFERENCES, SHADOWS, LogStore, rows_as_json

T0 = datetime(2026, 11, 23, 23, 59, 58, tzinfo=UTC)
FAR = (T0 - timedelta(days=2), T0 + timedelta(days=2))


def _request(i: int, when: datetime, n: int = 2, variant: str = "control") -> pa.Table:
    rows = inference_rows(
        time=when,
        request_id=f"r{i}",
        version=3,
        variant=variant,
        inputs=pa.table({"amount": [float(i)] * n, "age": list(range(n))}),
        outputs=pa.table({"probability": [i / 100] * n}),
        latency_ms=1.5,
    )
    return with_anomalies(rows, {})


def test_rows_come_back_with_contract_columns_across_a_date_boundary(tmp_path: Path) -> None:
    store = LogStore(tmp_path)
    for i in range(5):
        store.write(INFERENCES, "ws", "fraud", _request(i, T0 + timedelta(seconds=i)))
    days = sorted(p.name for p in (tmp_path / INFERENCES / "workspace=ws" / "pipeline=fraud").iterdir())
    assert days == ["date=2026-11-23", "date=2026-11-24"]
    table = store.query("ws", "fraud", *FAR, limit=100)
    assert table.num_rows == 10
    assert table.column_names == [
        "time", "request_id", "pipeline_version", "variant", "in.amount", "in.age",
        "out.probability", "latency_ms", "anomaly.count",
    ]  # fmt: skip
    assert table.column("request_id").to_pylist() == [f"r{i}" for i in range(5) for _ in range(2)]
    assert table.column("in.age").to_pylist() == [0, 1] * 5


def test_limit_keeps_the_newest_rows_oldest_first_and_time_range_filters(tmp_path: Path) -> None:
    store = LogStore(tmp_path)
    for i in range(6):
        store.write(INFERENCES, "ws", "fraud", _request(i, T0 + timedelta(seconds=i), n=1))
    newest = store.query("ws", "fraud", *FAR, limit=2)
    assert newest.column("request_id").to_pylist() == ["r4", "r5"]
    window = store.query("ws", "fraud", T0 + timedelta(seconds=1), T0 + timedelta(seconds=3), limit=100)
    assert window.column("request_id").to_pylist() == ["r1", "r2"]
    assert store.query("ws", "other", *FAR, limit=10).num_rows == 0


def test_shadow_outputs_and_errors_join_as_shadow_columns(tmp_path: Path) -> None:
    store = LogStore(tmp_path)
    store.write(INFERENCES, "ws", "ab", _request(1, T0))
    store.write(INFERENCES, "ws", "ab", _request(2, T0 + timedelta(seconds=1)))
    later = T0 + timedelta(seconds=5)
    good = pa.table({"probability": [0.7, 0.8]})
    outcomes = [("r1", "gbdt", good, None), ("r2", "gbdt", None, "boom"), ("r2", "bad", None, "down")]
    for request_id, variant, output, error in outcomes:
        rows = shadow_rows(time=later, request_id=request_id, variant=variant, rows=2, output=output, error=error)
        store.write(SHADOWS, "ws", "ab", rows)
    table = store.query("ws", "ab", *FAR, limit=100)
    rows = rows_as_json(table)
    assert [r["shadow.gbdt.out.probability"] for r in rows] == [0.7, 0.8, None, None]
    assert [r["shadow.gbdt.error"] for r in rows] == [None, None, "boom", "boom"]
    assert [r["shadow.bad.error"] for r in rows] == [None, None, "down", "down"]
    assert "shadow.bad.out.probability" not in table.column_names  # a shadow that never answered has no outputs
    assert rows[0]["time"] == "2026-11-23T23:59:58Z"


def test_compaction_merges_files_and_loses_nothing(tmp_path: Path) -> None:
    store = LogStore(tmp_path)
    for i in range(20):
        store.write(INFERENCES, "ws", "fraud", _request(i, T0 - timedelta(seconds=10 - i / 10), n=3))
    folder = store.partition(INFERENCES, "ws", "fraud", T0.date())
    assert len(list(folder.glob("*.parquet"))) == 20
    assert store.compact(min_files=16) == 1
    assert len(list(folder.glob("*.parquet"))) == 1
    table = store.query("ws", "fraud", *FAR, limit=1000)
    assert table.num_rows == 60
    assert sorted(set(table.column("request_id").to_pylist())) == sorted(f"r{i}" for i in range(20))


def test_compaction_leaves_large_files_alone(tmp_path: Path) -> None:
    """A merged file over the size limit is final: later merges take only the small files written since."""
    store = LogStore(tmp_path)
    folder = store.partition(INFERENCES, "ws", "fraud", T0.date())
    for i in range(4):
        store.write(INFERENCES, "ws", "fraud", _request(i, T0 - timedelta(seconds=10 - i), n=3))
    assert store.compact(min_files=2) == 1
    (first,) = folder.glob("*.parquet")
    for i in range(4, 8):
        store.write(INFERENCES, "ws", "fraud", _request(i, T0 - timedelta(seconds=10 - i), n=3))
    assert store.compact(min_files=2, small_bytes=first.stat().st_size) == 1  # the first merge is "large"
    files = sorted(folder.glob("*.parquet"))
    assert len(files) == 2 and first in files
    table = store.query("ws", "fraud", *FAR, limit=1000)
    assert sorted(set(table.column("request_id").to_pylist())) == sorted(f"r{i}" for i in range(8))
    assert store.compact(min_files=2, small_bytes=first.stat().st_size) == 0  # one small file: nothing to merge


def test_values_of_a_column_and_column_names(tmp_path: Path) -> None:
    store = LogStore(tmp_path)
    for i in range(4):
        store.write(INFERENCES, "ws", "fraud", _request(i, T0 - timedelta(hours=1) + timedelta(seconds=i), n=1))
    times, values = store.values("ws", "fraud", "out.probability", *FAR)
    np.testing.assert_allclose(np.sort(values), [0.0, 0.01, 0.02, 0.03])
    assert len(times) == 4
    assert "in.amount" in store.column_names("ws", "fraud", *FAR)
    assert store.column_names("ws", "nothing", *FAR) == []


def test_unknown_kind_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown log kind"):
        LogStore(tmp_path).write("other", "ws", "p", _request(1, T0))


def test_a_merge_holds_a_bounded_number_of_rows_in_memory(tmp_path: Path) -> None:
    """A part merged before may hold millions of rows; merging it again streams it in batches
    (reading it whole made the sink swing to 1.7 GB in the soak). Measured in a fresh process:
    Arrow's peak allocation while merging 1.2 M rows (~100 MB unpacked) stays far below that."""
    import subprocess
    import sys
    import textwrap

    store = LogStore(tmp_path)
    big = 1_200_000
    store.write(
        INFERENCES,
        "ws",
        "fraud",
        pa.table(
            {
                "time": pa.array([T0] * big, pa.timestamp("us", tz="UTC")),
                "request_id": pa.array([f"r{i % 1000}" for i in range(big)]),
                "pipeline_version": pa.array(np.ones(big, dtype=np.int64)),
                "variant": pa.array(["control"] * big),
                "in.x": pa.array(np.arange(big, dtype=np.float64)),
                "out.y": pa.array(np.arange(big, dtype=np.float64)),
                "latency_ms": pa.array(np.ones(big)),
            }
        ),
    )
    for i in range(3):
        store.write(INFERENCES, "ws", "fraud", _request(i, T0, n=3))
    script = textwrap.dedent(
        f"""
        import pyarrow as pa
        from pathlib import Path
        from monitoring.log_store import LogStore
        assert LogStore(Path({str(tmp_path)!r})).compact(min_files=2, small_bytes=2**40) == 1
        print(pa.default_memory_pool().max_memory())
        """
    )
    run = subprocess.run(
        [sys.executable, "-c", script], cwd=Path(__file__).parents[2], capture_output=True, text=True, check=True
    )
    peak_mb = int(run.stdout.split()[-1]) / 2**20
    assert peak_mb < 60, f"a merge of 1.2 M rows peaked at {peak_mb:.0f} MB of Arrow memory"
    table = store.query("ws", "fraud", *FAR, limit=2_000_000)
    assert table.num_rows == big + 9
