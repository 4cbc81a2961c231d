"""Codecs: content-type dispatch, V2 JSON and binary (checked against tritonclient), records, Arrow."""

from __future__ import annotations

import math
import struct
from typing import Any

import numpy as np
import orjson
import pyarrow as pa
import pytest
import tritonclient.http as triton
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from pipelines.codecs import Decoded, WireFormat, decode_request, encode_response, v2_datatype, wire_format
from pipelines.errors import BadPayload, InvalidInput, PayloadTooLarge, UnsupportedMediaType

LIMIT = 1 << 20
JSON = "application/json"
RECORDS = "application/json; format=pandas-records"
ARROW_FILE = "application/vnd.apache.arrow.file"
ARROW_STREAM = "application/vnd.apache.arrow.stream"


def decode(body: bytes | dict[str, Any] | list[Any], content_type: str | None = JSON, **headers: str) -> Decoded:
    raw = body if isinstance(body, bytes) else orjson.dumps(body)
    return decode_request(raw, content_type, {k.replace("_", "-"): v for k, v in headers.items()}, max_bytes=LIMIT)


def encode(table: pa.Table, decoded: Decoded, **parameters: Any) -> tuple[bytes, dict[str, str]]:
    return encode_response(table, decoded, model_name="fraud", model_version="3", parameters=parameters)


def v2_input(name: str, shape: list[int], datatype: str, data: Any) -> dict[str, Any]:
    return {"name": name, "shape": shape, "datatype": datatype, "data": data}


def triton_request(
    inputs: list[triton.InferInput], outputs: list[triton.InferRequestedOutput] | None = None, **kwargs: Any
) -> Decoded:
    body, header_length = triton.InferenceServerClient.generate_request_body(inputs, outputs=outputs, **kwargs)
    headers = {} if header_length is None else {"inference-header-content-length": str(header_length)}
    return decode_request(body, None, headers, max_bytes=LIMIT)


def triton_input(name: str, array: np.ndarray, datatype: str, binary: bool = True) -> triton.InferInput:
    tensor = triton.InferInput(name, list(array.shape), datatype)
    tensor.set_data_from_numpy(array, binary_data=binary)
    return tensor


def triton_result(body: bytes, headers: dict[str, str]) -> triton.InferResult:
    length = headers.get("inference-header-content-length")
    return triton.InferResult.from_response_body(body, header_length=None if length is None else int(length))


# ---------------------------------------------------------------- dispatch and limits


@pytest.mark.parametrize(
    ("content_type", "fmt"),
    [
        (None, WireFormat.V2),
        ("", WireFormat.V2),
        ("application/json", WireFormat.V2),
        ("Application/JSON; charset=utf-8", WireFormat.V2),
        ("application/octet-stream", WireFormat.V2),
        ("application/json; format=pandas-records", WireFormat.RECORDS),
        ('application/json;Format="Pandas-Records"; charset=UTF-8', WireFormat.RECORDS),
        ("application/vnd.apache.arrow.file", WireFormat.ARROW_FILE),
        ("APPLICATION/VND.APACHE.ARROW.STREAM", WireFormat.ARROW_STREAM),
    ],
)
def test_wire_format_by_content_type(content_type: str | None, fmt: WireFormat) -> None:
    assert wire_format(content_type) is fmt


@pytest.mark.parametrize("content_type", ["text/csv", "application/json; format=split", "application/xml"])
def test_unsupported_media_type_lists_the_supported_ones(content_type: str) -> None:
    with pytest.raises(UnsupportedMediaType, match="pandas-records") as info:
        decode(b"{}", content_type)
    assert "application/vnd.apache.arrow.stream" in info.value.message or "format=" in info.value.message


def test_binary_header_means_v2_whatever_the_content_type() -> None:
    body = orjson.dumps({"inputs": [v2_input("x", [1], "INT64", [4])]})
    decoded = decode(body, "text/plain", inference_header_content_length=str(len(body)))
    assert decoded.fmt is WireFormat.V2
    assert decoded.table.column("x").to_pylist() == [4]


def test_payload_too_large() -> None:
    with pytest.raises(PayloadTooLarge, match=r"limit of 10.*smaller batches.*CORRAL_MAX_PAYLOAD_BYTES"):
        decode_request(b"x" * 11, JSON, {}, max_bytes=10)


def test_empty_body() -> None:
    with pytest.raises(BadPayload, match="empty"):
        decode(b"")


# ---------------------------------------------------------------- V2 JSON decode


def test_v2_shapes_become_columns() -> None:
    decoded = decode(
        {
            "id": "req-1",
            "parameters": {"customer": "c1"},
            "inputs": [
                v2_input("plain", [2], "FP32", [1.5, 2.5]),
                v2_input("col", [2, 1], "INT32", [[1], [2]]),
                v2_input("matrix", [2, 3], "FP64", [1, 2, 3, 4, 5, 6]),
                v2_input("cube", [2, 2, 2], "INT64", [[[1, 2], [3, 4]], [[5, 6], [7, 8]]]),
                v2_input("text", [2], "BYTES", ["a", "é"]),
                v2_input("flag", [2], "BOOL", [True, False]),
            ],
        }
    )
    t = decoded.table
    assert decoded.request_id == "req-1"
    assert decoded.parameters == {"customer": "c1"}
    assert decoded.binary_output is False and decoded.requested_outputs is None
    assert t.schema.field("plain").type == pa.float32()
    assert t.schema.field("col").type == pa.int32()
    assert t.column("col").to_pylist() == [1, 2]
    assert t.schema.field("matrix").type == pa.list_(pa.float64(), 3)
    assert t.column("matrix").to_pylist() == [[1, 2, 3], [4, 5, 6]]
    assert t.schema.field("cube").type == pa.list_(pa.int64(), 4)
    assert orjson.loads(t.schema.field("cube").metadata[b"shape"]) == [2, 2, 2]
    assert t.column("text").to_pylist() == ["a", "é"]
    assert t.schema.field("flag").type == pa.bool_()


def test_v2_null_in_float_data_reads_as_nan() -> None:
    t = decode({"inputs": [v2_input("x", [2], "FP32", [None, 1.0])]}).table
    assert math.isnan(t.column("x")[0].as_py())


def test_v2_outputs_and_binary_flags() -> None:
    decoded = decode(
        {
            "inputs": [v2_input("x", [1], "FP32", [1])],
            "outputs": [{"name": "b"}, {"name": "a", "parameters": {"binary_data": True}}],
        }
    )
    assert decoded.requested_outputs == ("b", "a")
    assert decoded.binary_output is True
    flagged = decode({"inputs": [v2_input("x", [1], "FP32", [1])], "parameters": {"binary_data_output": True}})
    assert flagged.binary_output is True


@pytest.mark.parametrize(
    ("body", "match"),
    [
        ([{"x": 1}], "must be a JSON object with 'inputs'.*format=pandas-records"),
        ({"inputs": []}, "no 'inputs'"),
        ({"instances": [1]}, "no 'inputs'"),
        ({"inputs": [5]}, r"inputs\[0\] must be an object"),
        ({"inputs": [{"shape": [1], "datatype": "FP32", "data": [1]}]}, r"inputs\[0\] has no 'name'"),
        ({"inputs": [{"name": "x", "datatype": "FP32", "data": [1]}]}, "input 'x' has shape None"),
        ({"inputs": [v2_input("x", [1.5], "FP32", [1])]}, r"shape \[1.5\]"),  # type: ignore[list-item]
        ({"inputs": [v2_input("x", [1], "FP8", [1])]}, "unknown datatype 'FP8'; use one of BOOL"),
        ({"inputs": [{"name": "x", "shape": [1], "datatype": "FP32"}]}, "input 'x' has no 'data'"),
        ({"inputs": [v2_input("x", [2, 2], "FP32", [1, 2, 3])]}, r"shape \[2, 2\] \(4 values\).*holds 3"),
        ({"inputs": [v2_input("x", [2], "FP32", ["a", "b"])]}, "FP32 but 'data' holds strings; send numbers"),
        ({"inputs": [v2_input("x", [2], "FP32", ["1.5", "2"])]}, "holds strings"),
        ({"inputs": [v2_input("x", [1], "FP32", [True])]}, "holds true/false"),
        ({"inputs": [v2_input("x", [2], "INT64", [1.5, 2])]}, "non-integer numbers"),
        ({"inputs": [v2_input("x", [1], "INT8", [300])]}, "300 does not fit INT8"),
        ({"inputs": [v2_input("x", [2], "BOOL", [1, 0])]}, "BOOL but 'data' holds numbers"),
        ({"inputs": [v2_input("x", [2], "BYTES", [1, 2])]}, "holds non-strings"),
        ({"inputs": [v2_input("x", [2, 2], "FP32", [[1, 2], [3]])]}, "unequal lengths"),
        ({"inputs": [v2_input("x", [1], "FP32", 7)]}, "'data' must be a list"),
        ({"inputs": [v2_input("x", [0, 3], "FP32", [])]}, "holds no values"),
        (
            {"inputs": [v2_input("a", [2], "FP32", [1, 2]), v2_input("b", [3], "FP32", [1, 2, 3])]},
            "different first dimensions.*'a' has 2 rows, 'b' has 3",
        ),
        ({"inputs": [v2_input("a", [1], "FP32", [1]), v2_input("a", [1], "FP32", [2])]}, "same name"),
        ({"id": 5, "inputs": [v2_input("a", [1], "FP32", [1])]}, "'id' must be a string"),
        ({"parameters": [], "inputs": [v2_input("a", [1], "FP32", [1])]}, "'parameters' must be an object"),
        ({"outputs": [{"nom": "y"}], "inputs": [v2_input("a", [1], "FP32", [1])]}, r"outputs\[0\]"),
    ],
)
def test_v2_invalid_requests(body: Any, match: str) -> None:
    with pytest.raises(InvalidInput, match=match):
        decode(body)


@pytest.mark.parametrize("body", [b"{not json", b"\xff\xfe", b'{"inputs": [1,'])
def test_v2_unreadable_json_is_bad_payload(body: bytes) -> None:
    with pytest.raises(BadPayload, match="not valid JSON"):
        decode(body)


# ---------------------------------------------------------------- V2 JSON encode


def test_v2_json_reply() -> None:
    decoded = decode({"id": "r7", "inputs": [v2_input("x", [1], "FP32", [1])]})
    table = pa.table(
        {
            "probability": pa.array([[0.25, 0.75], [1.0, math.nan]], pa.list_(pa.float32(), 2)),
            "label": pa.array([1, None], pa.int64()),
            "name": ["a", None],
        }
    )
    body, headers = encode(table, decoded, variant="control")
    assert headers == {"content-type": "application/json"}
    reply = orjson.loads(body)
    assert list(reply) == ["model_name", "model_version", "id", "parameters", "outputs"]
    assert reply["model_name"] == "fraud" and reply["model_version"] == "3" and reply["id"] == "r7"
    assert reply["parameters"] == {"variant": "control"}
    assert reply["outputs"] == [
        {"name": "probability", "datatype": "FP32", "shape": [2, 2], "data": [0.25, 0.75, 1.0, None]},
        {"name": "label", "datatype": "INT64", "shape": [2], "data": [1, None]},
        {"name": "name", "datatype": "BYTES", "shape": [2], "data": ["a", None]},
    ]


def test_v2_reply_restores_a_stored_rank3_shape_and_filters_outputs() -> None:
    decoded = decode(
        {
            "inputs": [
                v2_input("cube", [1, 2, 2], "FP32", [1, 2, 3, 4]),
                v2_input("other", [1], "INT64", [9]),
            ],
            "outputs": [{"name": "other"}, {"name": "cube"}],
        }
    )
    reply = orjson.loads(encode(decoded.table, decoded)[0])
    assert [o["name"] for o in reply["outputs"]] == ["other", "cube"]
    assert reply["outputs"][1]["shape"] == [1, 2, 2]
    assert "id" not in reply


def test_v2_unknown_requested_output_lists_the_available_ones() -> None:
    decoded = decode({"inputs": [v2_input("x", [1], "FP32", [1])], "outputs": [{"name": "nope"}]})
    with pytest.raises(InvalidInput, match=r"\['nope'\] do not exist; this pipeline returns \['x'\]"):
        encode(decoded.table, decoded)


def test_v2_reply_of_unrepresentable_columns() -> None:
    decoded = decode({"inputs": [v2_input("x", [1], "FP32", [1])]})
    with pytest.raises(InvalidInput, match="no V2 datatype"):
        encode(pa.table({"t": pa.array([1], pa.timestamp("s"))}), decoded)
    with pytest.raises(InvalidInput, match="different lengths"):
        encode(pa.table({"l": pa.array([[1], [1, 2]])}), decoded)
    equal = orjson.loads(encode(pa.table({"l": pa.array([[1, 2], [3, 4]])}), decoded)[0])
    assert equal["outputs"][0]["shape"] == [2, 2]


def test_v2_datatype_mapping() -> None:
    assert v2_datatype(pa.float32()) == "FP32"
    assert v2_datatype(pa.float64()) == "FP64"
    assert v2_datatype(pa.int64()) == "INT64"
    assert v2_datatype(pa.uint8()) == "UINT8"
    assert v2_datatype(pa.bool_()) == "BOOL"
    assert v2_datatype(pa.string()) == "BYTES"
    assert v2_datatype(pa.large_binary()) == "BYTES"
    assert v2_datatype(pa.list_(pa.float16(), 3)) == "FP16"
    assert v2_datatype(pa.dictionary(pa.int8(), pa.string())) == "BYTES"
    with pytest.raises(InvalidInput, match="date32"):
        v2_datatype(pa.date32())


# ---------------------------------------------------------------- V2 binary extension, against tritonclient


def test_tritonclient_binary_request_decodes() -> None:
    x = np.random.default_rng(0).random((3, 4), dtype=np.float32)
    words = np.array([b"ab", "é".encode(), b""], dtype=np.object_)
    decoded = triton_request(
        [
            triton_input("x", x, "FP32"),
            triton_input("words", words, "BYTES"),
            triton_input("flags", np.array([True, False, True]), "BOOL"),
            triton_input("ids", np.arange(3, dtype=np.int64).reshape(3, 1), "INT64", binary=False),
            triton_input("small", np.array([[1], [2], [3]], dtype=np.int16), "INT16"),
        ],
        request_id="abc",
    )
    t = decoded.table
    assert decoded.fmt is WireFormat.V2 and decoded.request_id == "abc"
    assert decoded.binary_output is True  # tritonclient asks for binary when no outputs are named
    assert np.array_equal(np.array(t.column("x").to_pylist(), dtype=np.float32), x)
    assert t.column("words").to_pylist() == ["ab", "é", ""]
    assert t.column("flags").to_pylist() == [True, False, True]
    assert t.column("ids").to_pylist() == [0, 1, 2]
    assert t.schema.field("small").type == pa.int16()


def test_binary_bytes_that_are_not_utf8_stay_binary() -> None:
    decoded = triton_request([triton_input("raw", np.array([b"\xff\x00"], dtype=np.object_), "BYTES")])
    assert decoded.table.column("raw").to_pylist() == [b"\xff\x00"]


def test_binary_reply_reads_back_with_tritonclient() -> None:
    x = np.arange(6, dtype=np.float32).reshape(2, 3) / 7
    decoded = triton_request([triton_input("x", x, "FP32")])
    table = decoded.table.append_column("label", pa.array([0, 1], pa.int64()))
    table = table.append_column("name", pa.array(["lo", "hïgh"]))
    table = table.append_column("ok", pa.array([True, False]))
    body, headers = encode(table, decoded, variant="main")
    assert headers["content-type"] == "application/octet-stream"
    reply = orjson.loads(body[: int(headers["inference-header-content-length"])])
    assert all("data" not in o and "binary_data_size" in o["parameters"] for o in reply["outputs"])
    result = triton_result(body, headers)
    assert np.array_equal(result.as_numpy("x"), x)
    assert result.as_numpy("label").tolist() == [0, 1]
    assert result.as_numpy("name").tolist() == [b"lo", "hïgh".encode()]
    assert result.as_numpy("ok").tolist() == [True, False]
    assert result.get_response()["parameters"] == {"variant": "main"}


def test_requested_binary_output_via_tritonclient() -> None:
    x = np.ones((2, 2), dtype=np.float64)
    outputs = [triton.InferRequestedOutput("x", binary_data=True)]
    decoded = triton_request([triton_input("x", x, "FP64", binary=False)], outputs=outputs)
    assert decoded.requested_outputs == ("x",) and decoded.binary_output is True
    result = triton_result(*encode(decoded.table, decoded))
    assert np.array_equal(result.as_numpy("x"), x)


def test_json_reply_reads_back_with_tritonclient() -> None:
    x = np.array([[1, 2], [3, 4]], dtype=np.int32)
    outputs = [triton.InferRequestedOutput("x", binary_data=False)]
    decoded = triton_request([triton_input("x", x, "INT32")], outputs=outputs)
    assert decoded.binary_output is False
    body, headers = encode(decoded.table, decoded)
    assert "inference-header-content-length" not in headers
    assert np.array_equal(triton_result(body, headers).as_numpy("x"), x)


def test_binary_reply_refuses_null_integers() -> None:
    decoded = triton_request([triton_input("x", np.ones(2, dtype=np.float32), "FP32")])
    with pytest.raises(InvalidInput, match=r"null values.*binary INT64"):
        encode(pa.table({"n": pa.array([1, None], pa.int64())}), decoded)


def _binary_body(header: dict[str, Any], tail: bytes) -> tuple[bytes, str]:
    head = orjson.dumps(header)
    return head + tail, str(len(head))


def _binary_input(name: str, shape: list[int], datatype: str, size: int) -> dict[str, Any]:
    return {"name": name, "shape": shape, "datatype": datatype, "parameters": {"binary_data_size": size}}


@pytest.mark.parametrize(
    ("inputs", "tail", "match"),
    [
        ([_binary_input("x", [2], "FP32", 8)], b"\0" * 4, "declares 8 bytes.*only 4 remain"),
        ([_binary_input("x", [2], "FP32", 4)], b"\0" * 4, "binary_data_size is 4 bytes but 2 FP32 values take 8"),
        ([_binary_input("x", [1], "FP32", 4)], b"\0" * 6, "2 bytes follow the binary tensors"),
        ([_binary_input("x", [1], "BYTES", 6)], struct.pack("<I", 5) + b"ab", "runs past binary_data_size"),
        ([_binary_input("x", [1], "BYTES", 2)], b"ab", "ends inside an element length"),
        ([_binary_input("x", [2], "BYTES", 5)], struct.pack("<I", 1) + b"a", "holds 1 BYTES elements"),
        ([_binary_input("x", [1], "FP32", -1)], b"", "must be a byte count"),
    ],
)
def test_bad_binary_payloads(inputs: list[dict[str, Any]], tail: bytes, match: str) -> None:
    body, length = _binary_body({"inputs": inputs}, tail)
    with pytest.raises(BadPayload, match=match):
        decode(body, None, inference_header_content_length=length)


@pytest.mark.parametrize("length", ["abc", "0", "100000"])
def test_bad_header_length(length: str) -> None:
    with pytest.raises(BadPayload, match="Inference-Header-Content-Length"):
        decode(b'{"inputs": []}', None, inference_header_content_length=length)


def test_binary_data_size_without_the_header() -> None:
    with pytest.raises(BadPayload, match="no Inference-Header-Content-Length"):
        decode({"inputs": [_binary_input("x", [1], "FP32", 4)]})


# ---------------------------------------------------------------- property: V2 JSON round trip


@settings(max_examples=60, deadline=None)
@given(
    st.one_of(
        hnp.arrays(
            np.float32,
            hnp.array_shapes(min_dims=2, max_dims=2, min_side=1, max_side=6),
            elements=st.floats(width=32, allow_infinity=False, allow_nan=True),
        ),
        hnp.arrays(np.int64, hnp.array_shapes(min_dims=2, max_dims=2, min_side=1, max_side=6)),
    )
)
def test_v2_json_round_trip(tensor: np.ndarray) -> None:
    datatype = "FP32" if tensor.dtype == np.float32 else "INT64"
    request = {"inputs": [v2_input("t", list(tensor.shape), datatype, tensor.tolist())]}
    decoded = decode(orjson.dumps(request, option=orjson.OPT_SERIALIZE_NUMPY))
    output = orjson.loads(encode(decoded.table, decoded)[0])["outputs"][0]
    assert output["datatype"] == datatype
    expected_shape = list(tensor.shape) if tensor.shape[1] > 1 else [tensor.shape[0]]
    assert output["shape"] == expected_shape
    again = np.array([np.nan if v is None else v for v in output["data"]], dtype=tensor.dtype)
    np.testing.assert_array_equal(again, tensor.reshape(-1))


# ---------------------------------------------------------------- pandas records


def test_records_round_trip() -> None:
    rows = [
        {"age": 31, "amount": 12.5, "city": "Oslo", "v": [1.0, 2.0]},
        {"age": 40, "amount": None, "city": "Rome", "v": [3.0, 4.0]},
    ]
    decoded = decode(rows, RECORDS)
    assert decoded.fmt is WireFormat.RECORDS
    assert decoded.table.schema.field("v").type == pa.list_(pa.float64(), 2)
    body, headers = encode(decoded.table, decoded)
    assert headers == {"content-type": RECORDS}
    assert orjson.loads(body) == rows


def test_records_keep_columns_missing_from_the_first_row() -> None:
    t = decode([{"a": 1}, {"a": 2, "b": "x"}], RECORDS).table
    assert t.to_pydict() == {"a": [1, 2], "b": [None, "x"]}


def test_records_reply_writes_nan_as_null_and_float32_short() -> None:
    table = pa.table(
        {
            "p": pa.array([0.1, math.nan], pa.float32()),
            "v": pa.array([[0.1, 0.2], [0.3, math.nan]], pa.list_(pa.float32(), 2)),
            "n": pa.array([1, None]),
        }
    )
    body, _ = encode(table, Decoded(table, WireFormat.RECORDS))
    assert body == b'[{"p":0.1,"v":[0.1,0.2],"n":1},{"p":null,"v":[0.3,null],"n":null}]'


@pytest.mark.parametrize(
    ("body", "match"),
    [
        ([], "non-empty JSON list of objects"),
        ({"a": [1]}, "non-empty JSON list of objects"),
        ([{"a": 1}, 5], "record 1 is not an object"),
        ([{"a": 1}, {"a": "x"}], "do not form a table.*one type"),
    ],
)
def test_records_invalid(body: Any, match: str) -> None:
    with pytest.raises(InvalidInput, match=match):
        decode(body, RECORDS)


def test_records_not_json() -> None:
    with pytest.raises(BadPayload, match="not valid JSON"):
        decode(b"[{", RECORDS)


# ---------------------------------------------------------------- Arrow


def _ipc(table: pa.Table, stream: bool) -> bytes:
    sink = pa.BufferOutputStream()
    writer = pa.ipc.new_stream(sink, table.schema) if stream else pa.ipc.new_file(sink, table.schema)
    with writer:
        writer.write_table(table)
    return sink.getvalue().to_pybytes()


@pytest.mark.parametrize(("content_type", "stream"), [(ARROW_FILE, False), (ARROW_STREAM, True)])
def test_arrow_round_trip(content_type: str, stream: bool) -> None:
    table = pa.table(
        {"x": pa.array([1.5, 2.5], pa.float32()), "v": pa.array([[1, 2], [3, 4]], pa.list_(pa.int64(), 2))}
    )
    decoded = decode(_ipc(table, stream), content_type)
    assert decoded.table.equals(table)
    body, headers = encode(decoded.table, decoded)
    assert headers == {"content-type": content_type}
    reader = pa.ipc.open_stream(body) if stream else pa.ipc.open_file(body)
    assert reader.read_all().equals(table)


def test_arrow_garbage_and_truncation() -> None:
    good = _ipc(pa.table({"x": [1, 2, 3]}), stream=False)
    with pytest.raises(BadPayload, match=r"could not read the Arrow file: .*pyarrow.ipc.new_file"):
        decode(good[: len(good) // 2], ARROW_FILE)
    with pytest.raises(BadPayload, match=r"could not read the Arrow stream: .*pyarrow.ipc.new_stream"):
        decode(b"garbage", ARROW_STREAM)


def test_arrow_wrong_flavour_says_which_content_type() -> None:
    table = pa.table({"x": [1]})
    with pytest.raises(BadPayload, match=r"needs Content-Type: application/vnd.apache.arrow.stream"):
        decode(_ipc(table, stream=True), ARROW_FILE)
    with pytest.raises(BadPayload, match="looks like an IPC file"):
        decode(_ipc(table, stream=False), ARROW_STREAM)


def test_arrow_empty_table() -> None:
    with pytest.raises(InvalidInput, match="no rows"):
        decode(_ipc(pa.table({"x": pa.array([], pa.int64())}), stream=True), ARROW_STREAM)


def test_v2_reply_of_sliced_and_chunked_tensors() -> None:
    decoded = decode({"inputs": [v2_input("x", [1], "FP32", [1])]})
    probs = pa.array([[1, 2], [3, 4], [5, 6]], pa.list_(pa.float64(), 2))
    table = pa.table({"p": pa.chunked_array([probs.slice(0, 1), probs.slice(2)])})
    output = orjson.loads(encode(table, decoded)[0])["outputs"][0]
    assert output["shape"] == [2, 2] and output["data"] == [1, 2, 5, 6]


def test_records_reply_float64_nan_and_nested_values() -> None:
    table = pa.table({"f": [1.5, math.nan], "s": [{"k": 1}, None], "b": pa.array([b"\xff", b"ok"])})
    body, _ = encode(table, Decoded(table, WireFormat.RECORDS))
    assert orjson.loads(body) == [{"f": 1.5, "s": {"k": 1}, "b": "\\xff"}, {"f": None, "s": None, "b": "ok"}]
