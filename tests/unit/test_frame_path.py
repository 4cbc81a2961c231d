"""The fast path (Frames: numpy columns) against the table path (Arrow), in-process with real steps.

Property tests draw the shape of a request (dtypes, widths, nulls, 1..10,000 rows) with
hypothesis and build its values with numpy, then check that both paths give the same bytes:
Frame round trips, the records decoder, and whole replies of a pipeline of built-in and ONNX
steps through the router core (HttpEdge), in pandas records, Arrow and V2.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from typing import Any

import numpy as np
import onnx
import orjson
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper

from monitoring.log_schema import InferenceRecord, inference_table
from pipelines.builtin import Argmax, Rename, Select, StandardScale, Threshold
from pipelines.codecs.arrow import STREAM_TYPE
from pipelines.codecs.records import decode_records, encode_records
from pipelines.errors import Unauthenticated
from pipelines.frame import Frame
from pipelines.live_config import RouterConfig
from pipelines.onnx_step import OnnxModelStep
from pipelines.spec import TrafficSpec
from pipelines.step import run_step_sync
from serving.auth import AuthCache
from serving.dataplane import DataPlane
from serving.http import HttpEdge
from serving.segments import InlineSegment

PREFIX = "/ws/w/v2/models/p"
TOKEN = "frame-token"
RECORDS = {"content-type": "application/json; format=pandas-records", "authorization": f"Bearer {TOKEN}"}
FEATURES = ["a", "b", "c"]
DTYPES = ["bool", "int8", "int32", "int64", "uint16", "float32", "float64"]
SLOW = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def linear_model(width: int = 3) -> bytes:
    """y = x @ w + b, and a [N, 2] 'scores' output: a real ONNX graph of two outputs."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, width])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 1])
    scores = helper.make_tensor_value_info("scores", TensorProto.FLOAT, [None, 2])
    w = helper.make_tensor("w", TensorProto.FLOAT, [width, 1], [0.5, -1.25, 2.0][:width])
    w2 = helper.make_tensor("w2", TensorProto.FLOAT, [width, 2], list(np.linspace(-1, 1, width * 2)))
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"]), helper.make_node("MatMul", ["x", "w2"], ["scores"])],
        "linear",
        [x],
        [y, scores],
        [w, w2],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return bytes(model.SerializeToString())


MODEL = linear_model()


def chain() -> list[tuple[str, Any]]:
    """Select -> Rename -> StandardScale -> ONNX -> Threshold -> Argmax: every built-in fast path."""
    return [
        ("select", Select({"columns": ["a", "b", "c", "v"]})),
        ("rename", Rename({"mapping": {"v": "vec"}})),
        ("scale", StandardScale({"columns": ["a", "b", "vec"], "mean": [1.0, -2.0, 0.5], "std": [2.0, 3.0, 1.5]})),
        ("model", OnnxModelStep(MODEL, columns=FEATURES, allow_nan=True)),
        ("threshold", Threshold({"column": "scores", "threshold": 0.1, "output": "flag"})),
        ("argmax", Argmax({"column": "scores", "output": "best"})),
    ]


def edge(frames: bool) -> HttpEdge:
    plane = DataPlane("p", {"main": [InlineSegment(chain())]}, log=lambda record: None)
    probe = hashlib.sha256(b"probe").hexdigest()
    plane.apply(RouterConfig(version=1, traffic=TrafficSpec(weights={"main": 1}), probe_hash=probe, config_id="c"))
    allowed = hashlib.sha256(TOKEN.encode()).hexdigest()

    async def verify(token_hash: str) -> None:
        if token_hash != allowed:
            raise Unauthenticated("bad token")

    return HttpEdge(plane, AuthCache(verify), prefix=PREFIX, max_payload_bytes=1 << 28, frames=frames)


def reply(frames: bool, headers: dict[str, str], body: bytes) -> tuple[int, bytes, str]:
    status, reply_headers, payload = asyncio.run(edge(frames).handle("POST", PREFIX + "/infer", headers, body))
    return status, payload, reply_headers.get("content-type", "")


def column_values(rng: np.random.Generator, dtype: str, rows: int, width: int = 0) -> np.ndarray:
    shape: tuple[int, ...] = (rows, width) if width else (rows,)
    if dtype == "bool":
        return rng.random(shape) > 0.5
    if dtype.startswith(("int", "uint")):
        info = np.iinfo(dtype)
        return rng.integers(max(info.min, -1000), min(info.max, 1000), shape).astype(dtype)
    return (rng.standard_normal(shape) * 10).astype(dtype)


@st.composite
def tables(draw: st.DrawFn) -> pa.Table:
    """A request table: columns a, b, c (plain), v (a fixed-size list), maybe nulls, 1..10,000 rows."""
    rows = draw(st.one_of(st.integers(1, 8), st.integers(9, 10_000), st.just(10_000)))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    columns: dict[str, pa.Array] = {}
    for name in FEATURES:
        values = column_values(rng, draw(st.sampled_from(DTYPES)), rows)
        mask = rng.random(rows) < 0.05 if draw(st.booleans()) and name == "b" and rows > 1 else None
        columns[name] = pa.array(values, mask=mask)
    width = draw(st.integers(1, 3))
    flat = column_values(rng, draw(st.sampled_from(["int64", "float32", "float64"])), rows, width).reshape(-1)
    columns["v"] = pa.FixedSizeListArray.from_arrays(pa.array(flat), width)
    if draw(st.booleans()):
        columns["extra"] = pa.array(column_values(rng, "float64", rows))
    return pa.table(columns)


def records_body(table: pa.Table) -> bytes:
    return orjson.dumps(table.to_pylist())


# ---------------------------------------------------------------- Frames


@SLOW
@given(tables())
def test_a_frame_round_trips_exactly_and_exists_only_without_nulls(table: pa.Table) -> None:
    frame = Frame.from_arrow(table)
    if any(column.null_count for column in table.columns):
        assert frame is None
        return
    assert frame is not None
    back = frame.to_arrow()
    assert back.schema.equals(table.schema)
    assert back.equals(table)


def test_frames_refuse_what_they_cannot_hold() -> None:
    assert Frame.from_arrow(pa.table({"s": ["x"]})) is None
    assert Frame.from_arrow(pa.table({"l": pa.array([[1], [2, 3]])})) is None
    assert Frame.from_arrow(pa.table({"h": pa.array(np.ones(2, np.float16))})) is None
    with_meta = pa.table({"x": [1.0]}).replace_schema_metadata({"k": "v"})
    assert Frame.from_arrow(with_meta) is None
    required = pa.table({"x": [1.0]}, schema=pa.schema([pa.field("x", pa.float64(), nullable=False)]))
    assert Frame.from_arrow(required) is None


# ---------------------------------------------------------------- records codec


json_values = st.one_of(
    st.integers(-(2**63), 2**63 - 1),
    st.integers(2**63, 2**64),
    st.floats(allow_nan=False, allow_infinity=False),
    st.booleans(),
    st.none(),
    st.text(max_size=3),
)
json_lists = st.lists(st.one_of(st.integers(-5, 5), st.floats(-1e3, 1e3), st.booleans()), min_size=0, max_size=3)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.dictionaries(st.sampled_from("xyz"), st.one_of(json_values, json_lists), max_size=3), min_size=1, max_size=6
    )
)
def test_records_decode_to_the_same_table_on_both_paths(rows: list[dict[str, Any]]) -> None:
    body = json.dumps(rows).encode()  # the standard library writes integers of any size
    try:
        slow = decode_records(body, frames=False)
    except Exception as table_error:
        with pytest.raises(type(table_error)) as fast_error:
            decode_records(body)
        assert str(fast_error.value) == str(table_error)
        return
    fast = decode_records(body)
    assert fast.table.schema.equals(slow.table.schema)
    assert fast.table.equals(slow.table)
    assert encode_records(fast.data)[0] == encode_records(slow.table)[0]


@SLOW
@given(tables())
def test_records_encode_writes_the_bytes_orjson_writes_for_dicts(table: pa.Table) -> None:
    frame = Frame.from_arrow(table)
    if frame is None:
        return
    expected = orjson.dumps(
        [dict(zip(frame.names, values, strict=True)) for values in zip(*map(_per_row, frame.columns), strict=True)],
        option=orjson.OPT_SERIALIZE_NUMPY,
    )
    assert encode_records(frame)[0] == expected


def _per_row(column: np.ndarray) -> Any:
    if column.dtype.kind == "f" and column.dtype != np.float64:
        return list(column) if column.ndim == 2 else column
    return column.tolist()


# ---------------------------------------------------------------- whole replies


@SLOW
@given(tables(), st.sampled_from(["records", "arrow", "v2"]))
def test_fast_and_table_paths_give_byte_identical_replies(table: pa.Table, wire: str) -> None:
    if wire == "records":
        headers, body = RECORDS, records_body(table)
    elif wire == "arrow":
        sink = pa.BufferOutputStream()
        with pa.ipc.new_stream(sink, table.schema) as writer:
            writer.write_table(table)
        headers = {"content-type": STREAM_TYPE, "authorization": RECORDS["authorization"]}
        body = sink.getvalue().to_pybytes()
    else:
        headers = {"content-type": "application/json", "authorization": RECORDS["authorization"]}
        body = v2_body(table)
    fast, slow = reply(True, headers, body), reply(False, headers, body)
    assert fast == slow
    assert fast[0] in (200, 422), fast
    frame = Frame.from_arrow(table)
    if frame is not None:  # no nulls: the fast path really ran, from the first step to the last
        plane = edge(True).plane
        assert isinstance(asyncio.run(plane.infer(frame)).outputs, Frame)
        assert fast[0] == 200


def v2_body(table: pa.Table) -> bytes:
    kinds = {"b": "BOOL", "i": "INT64", "u": "INT64", "f": "FP64"}
    inputs = []
    for name, column in zip(table.column_names, table.columns, strict=True):
        if pa.types.is_fixed_size_list(column.type):
            width = column.type.list_size
            values = np.asarray(column.combine_chunks().values.to_numpy(zero_copy_only=False))
            shape = [table.num_rows, width]
        else:
            values = column.to_numpy(zero_copy_only=False)
            shape = [table.num_rows]
        datatype = kinds[values.dtype.kind] if column.null_count == 0 else "FP64"
        data = [None if v != v else v for v in values.tolist()] if column.null_count else values.tolist()
        inputs.append({"name": name, "shape": shape, "datatype": datatype, "data": data})
    return orjson.dumps({"inputs": inputs})


def test_the_demo_row_takes_the_fast_path_end_to_end() -> None:
    """One pandas record of numbers decodes to a Frame, stays one through every step, and is logged."""
    records: list[InferenceRecord] = []
    plane = DataPlane("p", {"main": [InlineSegment(chain())]}, log=records.append)
    plane.apply(RouterConfig(version=1, traffic=TrafficSpec(weights={"main": 1}), probe_hash="x", config_id="c"))
    decoded = decode_records(b'[{"a": 1, "b": 2.5, "c": true, "v": [1, 2]}]')
    assert isinstance(decoded.data, Frame)
    result = asyncio.run(plane.infer(decoded.data))
    assert isinstance(result.outputs, Frame)
    assert result.outputs.column_names == ["y", "scores", "flag", "best"]
    [logged] = inference_table(records)
    assert logged.column_names[-1] == "latency_ms"
    assert logged["in.v"].type == pa.list_(pa.int64(), 2)  # the request as sent, not as scaled
    assert logged["out.flag"].to_pylist() == [int(result.outputs.column("flag")[0])]


def test_log_rows_of_fast_and_table_requests_are_the_same_table() -> None:
    vec = pa.FixedSizeListArray.from_arrays(pa.array([1.0, 2.0]), 1)
    table = pa.table({"a": [1, 2], "b": [0.5, 1.5], "c": [True, False], "v": vec})
    logs: dict[bool, list[InferenceRecord]] = {True: [], False: []}
    for frames in (True, False):
        plane = DataPlane("p", {"main": [InlineSegment(chain())]}, log=logs[frames].append)
        plane.apply(RouterConfig(version=1, traffic=TrafficSpec(weights={"main": 1}), probe_hash="x", config_id="c"))
        data = Frame.from_arrow(table) if frames else table
        assert data is not None
        for _ in range(3):
            asyncio.run(plane.infer(data))
    [fast], [slow] = inference_table(logs[True]), inference_table(logs[False])
    columns = [c for c in fast.column_names if c not in ("time", "request_id", "latency_ms")]
    assert fast.schema.equals(slow.schema)
    assert fast.select(columns).equals(slow.select(columns))


# ---------------------------------------------------------------- row counts


class DropsARowOnTheFastPath:
    """A step whose fast path is wrong about row counts: the same 422 as a table step's."""

    non_blocking = True

    def on_frame(self, frame: Frame) -> Frame:
        return Frame(frame.names, tuple(c[:-1] for c in frame.columns), frame.num_rows - 1)

    def __call__(self, table: pa.Table) -> pa.Table:
        return table.slice(0, table.num_rows - 1)


def test_a_step_that_changes_the_row_count_on_the_fast_path_gets_the_table_paths_422() -> None:
    body = b'[{"a": 1.0}, {"a": 2.0}]'
    replies = []
    for frames in (True, False):
        plane = DataPlane("p", {"main": [InlineSegment([("dropper", DropsARowOnTheFastPath())])]}, log=lambda r: None)
        plane.apply(RouterConfig(version=1, traffic=TrafficSpec(weights={"main": 1}), probe_hash="x", config_id="c"))
        allowed = hashlib.sha256(TOKEN.encode()).hexdigest()

        async def verify(token_hash: str, allowed: str = allowed) -> None:
            if token_hash != allowed:
                raise Unauthenticated("bad token")

        http = HttpEdge(plane, AuthCache(verify), prefix=PREFIX, max_payload_bytes=1 << 20, frames=frames)
        status, _, payload = asyncio.run(http.handle("POST", PREFIX + "/infer", RECORDS, body))
        replies.append((status, payload))
    assert replies[0] == replies[1]
    assert replies[0][0] == 422
    assert b"returned 1 rows for 2 input rows" in replies[0][1]


def test_a_fast_path_that_declines_hands_the_step_its_table() -> None:
    """on_frame answering None (here: a column the step needs is missing) means the table path
    decides, with its own error message."""
    frame = Frame(("a",), (np.array([1.0]),), 1)
    with pytest.raises(Exception, match="column 'b' is missing"):
        run_step_sync(Threshold({"column": "b", "threshold": 0}), frame, step_name="t")
