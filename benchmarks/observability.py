"""Observability benchmark (not a test): what logging costs a request, and an assay over 1 M logged rows.

    python -m benchmarks.observability [--rows 1000000]

1. Logging work per single-row request, in-process: building the log row and queueing it (the
   router's share, on the request path), then one validation and the write, in batches of 100
   (the sink's share, off the request path, amortised). Compared
   with Corral's single-row request time from the last `benchmarks.core` run if there is one.
2. An assay (PSI, 5 quantile bins, 10 windows) over `--rows` logged rows in Parquet, read with
   DuckDB, next to the peer: pandas reading the same files and numpy binning the same way.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from monitoring.assay_spec import AssaySpec
from monitoring.assays import bin_edges, bin_fractions, run_windows, score, window_bounds
from monitoring.log_schema import inference_rows, with_anomalies
from monitoring.log_store import INFERENCES, LogStore
from pipelines.rules import flag_rows, parse_rules
from serving.log_buffer import LogBuffer

T0 = datetime(2026, 11, 1, tzinfo=UTC)


def logging_cost_us(n: int = 5_000) -> dict[str, float]:
    rules = parse_rules({"high_risk": "out.probability > 0.9"})
    inputs = pa.table({f"f{i}": [float(i)] for i in range(6)})
    outputs = pa.table({"probability": [0.3], "label": [0]})
    tables: list[pa.Table] = []

    async def send(_: str, rows: pa.Table) -> None:
        tables.append(rows)

    async def router_share() -> float:
        buffer = LogBuffer(send, delay_s=3600)
        started = time.perf_counter()
        for i in range(n):
            rows = inference_rows(
                time=T0, request_id=f"{i:032x}", version=1, variant="main", inputs=inputs, outputs=outputs,
                latency_ms=1.0,
            )  # fmt: skip
            buffer.add(INFERENCES, rows)
        elapsed = time.perf_counter() - started
        await buffer.flush()
        return elapsed / n * 1e6

    router_us = asyncio.run(router_share())
    rows = tables[0]
    with tempfile.TemporaryDirectory() as tmp:
        store = LogStore(Path(tmp))
        started = time.perf_counter()
        for start in range(0, rows.num_rows, 100):  # ~10 sink calls a second carry ~100 rows each
            batch = rows.slice(start, 100)
            store.write(INFERENCES, "ws", "p", with_anomalies(batch, flag_rows(rules, batch).columns))
        sink_us = (time.perf_counter() - started) / rows.num_rows * 1e6
    return {"router_us_per_request": router_us, "sink_us_per_row": sink_us}


def assay_vs_peer(n_rows: int) -> dict[str, Any]:
    rng = np.random.default_rng(0)
    spec = AssaySpec.model_validate(
        {
            "pipeline": "p",
            "target": "out.probability",
            "baseline": {"values": rng.beta(2, 5, 10_000).tolist()},
            "window": {"width": f"{max(1, n_rows // 10)}s"},
        }
    )
    with tempfile.TemporaryDirectory() as tmp:
        store = LogStore(Path(tmp))
        for part in range(10):  # ten files, a row a second
            count = n_rows // 10
            times = [T0 + timedelta(seconds=part * count + i) for i in range(count)]
            store.write(
                INFERENCES,
                "ws",
                "p",
                pa.table(
                    {"time": pa.array(times, pa.timestamp("us", tz="UTC")), "out.probability": rng.beta(2, 5, count)}
                ),
            )
        end = T0 + timedelta(seconds=n_rows)
        bounds = window_bounds(T0, end, spec.window.width, spec.window.interval)
        baseline = np.asarray(spec.baseline.values)

        started = time.perf_counter()
        stamps, values = store.values("ws", "p", spec.target, T0, end)
        corral_results = run_windows(spec, baseline, bounds, _slicer(stamps, values))
        corral_s = time.perf_counter() - started

        started = time.perf_counter()
        frame = pd.read_parquet(tmp, columns=["time", "out.probability"])
        edges = bin_edges(baseline, spec.bins)
        expected = bin_fractions(baseline, edges)
        peer_scores = []
        for lo, hi in bounds:
            window = frame["out.probability"].to_numpy()[(frame.time >= lo).to_numpy() & (frame.time < hi).to_numpy()]
            peer_scores.append(score(expected, bin_fractions(window, edges), "psi")[0])
        peer_s = time.perf_counter() - started
    assert np.allclose([r.score for r in corral_results], peer_scores)
    return {"rows": n_rows, "windows": len(bounds), "corral_s": corral_s, "peer_s": peer_s}


def _slicer(stamps: np.ndarray, values: np.ndarray) -> Any:
    order = np.argsort(stamps)
    stamps, values = stamps[order], values[order]

    def values_in(lo: datetime, hi: datetime) -> np.ndarray:
        a, b = np.searchsorted(stamps, [int(lo.timestamp() * 1e6), int(hi.timestamp() * 1e6)])
        return values[a:b]

    return values_in


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    args = parser.parse_args()
    cost = logging_cost_us()
    core = Path("bench-results/core.json")
    request_ms = None
    if core.exists():
        for row in json.loads(core.read_text()).get("workloads", []):
            if row.get("workload") == "1 row, records, c=1" and "corral" in row:
                request_ms = 1000 / row["corral"]["req_per_s"]
    log_us = cost["router_us_per_request"] + cost["sink_us_per_row"]
    print(f"logging per single-row request: router {cost['router_us_per_request']:.0f} us + sink "
          f"{cost['sink_us_per_row']:.0f} us = {log_us:.0f} us")  # fmt: skip
    if request_ms:
        print(f"  = {log_us / 10 / request_ms:.2f}% of Corral's single-row request time ({request_ms:.1f} ms)")
    assay = assay_vs_peer(args.rows)
    print(f"assay over {assay['rows']:,} logged rows, {assay['windows']} windows: Corral (DuckDB) "
          f"{assay['corral_s']:.2f} s, peer (pandas + numpy) {assay['peer_s']:.2f} s, "
          f"ratio {assay['corral_s'] / assay['peer_s']:.2f}x")  # fmt: skip
    Path("bench-results").mkdir(exist_ok=True)
    Path("bench-results/observability.json").write_text(json.dumps({"logging": cost, "assay": assay}, indent=2))


if __name__ == "__main__":
    main()
