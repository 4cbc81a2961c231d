"""The inference-log row (contract): how one request's inputs and outputs become flat log columns.

Columns: `time` (UTC), `request_id`, `pipeline_version`, `variant`, `in.<name>`, `out.<name>`,
`anomaly.<validation>`, `anomaly.count`, `latency_ms`; shadow variants' outputs are stored as their
own rows (`shadow_rows`) and joined in at query time as `shadow.<variant>.out.<name>` and
`shadow.<variant>.error`, because a shadow finishes after the primary reply has been logged.
`_row` (the row's index inside its request) is stored to make that join exact; queries drop it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pyarrow as pa

from pipelines.frame import Data, Frame, as_table, concat_tables

INFERENCES = "inferences"  # the two kinds of log rows: answered requests, and shadow outcomes
SHADOWS = "shadows"
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
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


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
    inputs: Data,
    outputs: Data,
    latency_ms: float,
) -> pa.Table:
    """The log rows of one answered request, without anomaly columns (see `with_anomalies`)."""
    inputs, outputs = as_table(inputs), as_table(outputs)
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


@dataclass(frozen=True, slots=True)
class InferenceRecord:
    """One answered request as the router keeps it until the next flush (tables or frames, no copies)."""

    time: datetime
    request_id: str
    version: int
    variant: str
    inputs: Data
    outputs: Data
    latency_ms: float

    @property
    def num_rows(self) -> int:
        return max(self.inputs.num_rows, self.outputs.num_rows)

    def rows(self) -> pa.Table:
        """This request's log rows alone (`inference_table` builds many requests' at once)."""
        return inference_rows(
            time=self.time,
            request_id=self.request_id,
            version=self.version,
            variant=self.variant,
            inputs=self.inputs,
            outputs=self.outputs,
            latency_ms=self.latency_ms,
        )


def inference_table(records: Sequence[InferenceRecord]) -> list[pa.Table]:
    """The log rows of many requests, built once per flush rather than once per request.

    Requests whose inputs and outputs have the same schemas (the usual case) share one table,
    their columns concatenated without copies; a group of another schema is a table of its own.
    """
    # Grouped by schema equality, not as dict keys: hashing a pa.Schema costs ~4 us, an equality
    # test against the one group there usually is ~0.05 us (profiled in a router under load).
    # Frames group by their signature (a tuple compare), and join in numpy before becoming Arrow.
    groups: list[tuple[Any, Any, list[InferenceRecord]]] = []
    for record in records:
        inputs, outputs = _shape_of(record.inputs), _shape_of(record.outputs)
        for group_inputs, group_outputs, members in groups:
            if _same(inputs, group_inputs) and _same(outputs, group_outputs):
                members.append(record)
                break
        else:
            groups.append((inputs, outputs, [record]))
    tables = [_group_table(members) for _, _, members in groups]
    if len(tables) > 1:
        try:
            return [pa.concat_tables(tables, promote_options="permissive")]
        except (pa.ArrowInvalid, pa.ArrowTypeError):  # a column changed type between versions
            return tables
    return tables


def _shape_of(data: Data) -> Any:
    return data.signature if isinstance(data, Frame) else data.schema


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, pa.Schema):
        return isinstance(b, pa.Schema) and a.equals(b)
    return isinstance(b, tuple) and a == b


def _group_table(records: list[InferenceRecord]) -> pa.Table:
    if any(r.inputs.num_rows != r.outputs.num_rows for r in records):
        return pa.concat_tables([r.rows() for r in records])
    counts = np.fromiter((r.inputs.num_rows for r in records), dtype=np.int64, count=len(records))
    starts = np.repeat(np.cumsum(counts) - counts, counts)
    micros = np.fromiter(((r.time - _EPOCH) // _MICROSECOND for r in records), dtype=np.int64, count=len(records))
    columns: dict[str, pa.Array | pa.ChunkedArray] = {
        TIME: pa.array(np.repeat(micros, counts)).cast(TIME_TYPE),
        REQUEST_ID: pa.array(np.repeat(np.array([r.request_id for r in records], dtype=object), counts), pa.string()),
        ROW: pa.array((np.arange(int(counts.sum())) - starts).astype(np.int32)),
        VERSION: pa.array(np.repeat(np.array([r.version for r in records], dtype=np.int32), counts)),
        VARIANT: pa.array(np.repeat(np.array([r.variant for r in records], dtype=object), counts), pa.string()),
    }
    inputs = concat_tables(r.inputs for r in records)
    outputs = concat_tables(r.outputs for r in records)
    for name in inputs.column_names:
        columns[IN + name] = inputs.column(name)
    for name in outputs.column_names:
        columns[OUT + name] = outputs.column(name)
    columns[LATENCY] = pa.array(np.repeat(np.array([r.latency_ms for r in records], dtype=np.float64), counts))
    # One chunk per column: a chunk per request would make the IPC bytes, the sink's read and the
    # Parquet write cost per request again (70 chunks: 8x the bytes, 3x the IPC time).
    return pa.table(columns).combine_chunks()

