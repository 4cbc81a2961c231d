"""The inference-log row (contract): how one request's inputs and outputs become flat log columns.

Columns: `time` (UTC), `request_id`, `pipeline_version`, `variant`, `in.<name>`, `out.<name>`,
`anomaly.<validation>`, `anomaly.count`, `latency_ms`; shadow variants' outputs are stored as their
own rows (`shadow_rows`) and joined in at query time as `shadow.<variant>.out.<name>` and
`shadow.<variant>.error`, because a shadow finishes after the primary reply has been logged.
`_row` (the row's index inside its request) is stored to make that join exact; queries drop it.
"""

from __future__ import annotations

from datetime import datetime

import pyarrow as pa

TIME = "time"
REQUEST_ID = "request_id"
ROW = "_row"
VERSION = "pipeline_version"
VARIANT = "variant"
LATENCY = "latency_ms"
ERROR = "error"
ANOMALY_COUNT = "anomaly.count"
IN, OUT, ANOMALY, SHADOW = "in.", "out.", "anomaly.", "shadow."
TIME_TYPE = pa.timestamp("us", tz="UTC")


def _fit(column: pa.ChunkedArray | pa.Array, rows: int) -> pa.Array | pa.ChunkedArray:
    """Pad with nulls or cut, for steps that return a different number of rows than they got."""
    if len(column) == rows:
        return column
    if len(column) > rows:
        return column.slice(0, rows)
    return pa.concat_arrays([pa.array(column.to_pylist(), column.type), pa.nulls(rows - len(column), column.type)])


def inference_rows(
    *,
    time: datetime,
    request_id: str,
    version: int,
    variant: str,
    inputs: pa.Table,
    outputs: pa.Table,
    latency_ms: float,
) -> pa.Table:
    """The log rows of one answered request, without anomaly columns (see `with_anomalies`)."""
    rows = max(inputs.num_rows, outputs.num_rows)
    columns: dict[str, pa.Array | pa.ChunkedArray] = {
        TIME: pa.array([time] * rows, TIME_TYPE),
        REQUEST_ID: pa.array([request_id] * rows, pa.string()),
        ROW: pa.array(range(rows), pa.int32()),
        VERSION: pa.array([version] * rows, pa.int32()),
        VARIANT: pa.array([variant] * rows, pa.string()),
    }
    for name in inputs.column_names:
        columns[IN + name] = _fit(inputs.column(name), rows)
    for name in outputs.column_names:
        columns[OUT + name] = _fit(outputs.column(name), rows)
    columns[LATENCY] = pa.array([latency_ms] * rows, pa.float64())
    return pa.table(columns)


def with_anomalies(rows: pa.Table, flags: dict[str, pa.Array]) -> pa.Table:
    """Append `anomaly.<name>` columns and `anomaly.count` (0 when the pipeline has no validations)."""
    for name, column in flags.items():
        rows = rows.append_column(name, column)
    if ANOMALY_COUNT not in flags:
        rows = rows.append_column(ANOMALY_COUNT, pa.array([0] * rows.num_rows, pa.int32()))
    return rows


def shadow_rows(
    *, time: datetime, request_id: str, variant: str, rows: int, output: pa.Table | None, error: str | None
) -> pa.Table:
    """What one shadow variant made of one request: its outputs per row, or its error on every row."""
    if output is not None:
        rows = output.num_rows
    columns: dict[str, pa.Array | pa.ChunkedArray] = {
        TIME: pa.array([time] * rows, TIME_TYPE),
        REQUEST_ID: pa.array([request_id] * rows, pa.string()),
        ROW: pa.array(range(rows), pa.int32()),
        VARIANT: pa.array([variant] * rows, pa.string()),
        ERROR: pa.array([error] * rows, pa.string()),
    }
    if output is not None:
        for name in output.column_names:
            columns[OUT + name] = output.column(name)
    return pa.table(columns)
