"""Demo stage: the inference log, a validation, and a drift assay that catches a shifted batch."""

from __future__ import annotations

import io
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pyarrow as pa
from rich.console import Console
from rich.table import Table

from cluster.sdk import Client
from examples.fraud import FEATURES, make_transactions

VALIDATIONS = {"big_spender": "in.amount > 1000"}


def send_arrow(client: Client, pipeline: str, frame: pd.DataFrame) -> None:
    table = pa.Table.from_pandas(frame[FEATURES], preserve_index=False)
    sink = io.BytesIO()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    reply = httpx.post(
        f"{client.url}/ws/default/v2/models/{pipeline}/infer",
        content=sink.getvalue(),
        headers={**client._http.headers, "content-type": "application/vnd.apache.arrow.stream"},
        timeout=60,
    )
    reply.raise_for_status()


def observe(
    console: Console,
    client: Client,
    pipeline: str,
    train: pd.DataFrame,
    since: datetime,
    expected_rows: int,
    home: Path,
) -> dict[str, Any]:
    """Check every reply was logged, count validation flags, then preview an assay on in.amount over
    two windows: the demo's traffic so far (ok) and a batch whose amounts are 2.7x larger (alert)."""
    deadline = time.monotonic() + 10
    while len(logs := client.pipeline(pipeline).logs(start=since, limit=1_000_000)) < expected_rows:
        if time.monotonic() > deadline:
            break
        time.sleep(0.2)
    flagged = int(logs["anomaly.big_spender"].sum()) if "anomaly.big_spender" in logs else 0
    console.print(
        f"inference log: {len(logs):,} of {expected_rows:,} rows answered so far are logged "
        f"(`corral logs {pipeline}`); validation big_spender (in.amount > 1000) flagged {flagged:,}"
    )
    width = max(1.0, (datetime.now(UTC) - since).total_seconds())
    shifted_at = since + timedelta(seconds=width)
    time.sleep(max(0.0, (shifted_at - datetime.now(UTC)).total_seconds()) + 0.05)
    send_arrow(client, pipeline, make_transactions(2_000, seed=11, shift=1.0))
    time.sleep(0.5)  # the last rows reach the log within a second
    baseline = train["amount"].sample(5_000, random_state=1).round(2).tolist()
    assay = client.assay(
        "fraud-amount",
        {
            "pipeline": pipeline,
            "target": "in.amount",
            "baseline": {"values": baseline},
            "window": {"width": width, "interval": width, "start": since.isoformat()},
            "metric": "psi",
            "thresholds": {"warning": 0.1, "alert": 0.25},
        },
    )
    windows = assay.preview(start=since, end=since + timedelta(seconds=2 * width))
    chart = home / "fraud-amount-drift.png"
    assay.chart(chart, start=since, end=since + timedelta(seconds=2 * width), preview=True)
    table = Table("window", "rows", "PSI", "status", title="assay fraud-amount (in.amount vs training data)")
    colours = {"ok": "green", "warning": "yellow", "alert": "red"}
    for i, row in enumerate(windows.itertuples()):
        label = "demo traffic" if i == 0 else "2,000 rows with amounts x2.7"
        score = "-" if row.score is None or np.isnan(row.score) else f"{row.score:.3f}"
        table.add_row(label, f"{row.rows:,}", score, f"[{colours[row.status]}]{row.status}[/]")
    console.print(table)
    console.print(f"drift chart: {chart} (also `corral assays chart fraud-amount --preview`)")
    return {"logged": len(logs), "flagged": flagged, "statuses": windows.status.tolist(), "chart": str(chart)}
