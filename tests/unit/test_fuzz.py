"""Fuzzing (hypothesis): bad bytes in any wire format, and any JSON as a spec, end as a 4xx domain
error, never as another exception (which the edge would have to answer with a 500).

Inputs are valid payloads of every codec cut, flipped and spliced, arbitrary bytes, and JSON
values of any shape; the same decoded request is then encoded back, as the router would.
"""

from __future__ import annotations

import io
import json
from typing import Any

import numpy as np
import orjson
import pyarrow as pa
import pytest
import tritonclient.http as triton
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cluster.api import parse_spec_body
from cluster.registry import parse_spec
from pipelines.codecs import decode_request, encode_response
from pipelines.errors import CorralError
from serving.errors import status_of

LIMIT = 1 << 20
FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _arrow(stream: bool) -> bytes:
    table = pa.table({"amount": [1.5, 2.0], "age": [30, 41], "city": ["a", None]})
    sink = io.BytesIO()
    opener = pa.ipc.new_stream if stream else pa.ipc.new_file
    with opener(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue()


def _triton() -> tuple[bytes, dict[str, str]]:
    tensor = triton.InferInput("x", [2, 3], "FP32")
    tensor.set_data_from_numpy(np.arange(6, dtype=np.float32).reshape(2, 3), binary_data=True)
    names = triton.InferInput("name", [2], "BYTES")
    names.set_data_from_numpy(np.array([b"a", b"bc"], dtype=object), binary_data=True)
    body, length = triton.InferenceServerClient.generate_request_body([tensor, names])
    return body, {"inference-header-content-length": str(length)}


V2_BODY = orjson.dumps({"inputs": [{"name": "x", "shape": [2, 2], "datatype": "FP64", "data": [1, 2, 3, 4]}]})
RECORDS_BODY = orjson.dumps([{"amount": 1.5, "age": 30}, {"amount": 2.0, "age": None}])
TRITON_BODY, TRITON_HEADERS = _triton()
# (content type, a valid body, headers)
VALID = {
    "v2 json": ("application/json", V2_BODY, {}),
    "v2 binary": ("application/octet-stream", TRITON_BODY, TRITON_HEADERS),
    "records": ("application/json; format=pandas-records", RECORDS_BODY, {}),
    "arrow file": ("application/vnd.apache.arrow.file", _arrow(stream=False), {}),
    "arrow stream": ("application/vnd.apache.arrow.stream", _arrow(stream=True), {}),
}


@st.composite
def mutated(draw: st.DrawFn, body: bytes) -> bytes:
    """`body` with a few random edits: cut short, bytes flipped, bytes inserted or dropped."""
    data = bytearray(body)
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["cut", "flip", "insert", "drop"]))
        at = draw(st.integers(0, max(0, len(data) - 1)))
        if kind == "cut":
            del data[at:]
        elif kind == "flip" and data:
            data[at] ^= draw(st.integers(1, 255))
        elif kind == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=8))
        elif data:
            del data[at : at + draw(st.integers(1, 8))]
    return bytes(data)


def json_values() -> st.SearchStrategy[Any]:
    scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20)
    return st.recursive(
        scalars, lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=12), inner, max_size=5)
    )


def assert_client_error_or_reply(content_type: str, body: bytes, headers: dict[str, str]) -> None:
    try:
        decoded = decode_request(body, content_type, headers, max_bytes=LIMIT)
        encode_response(decoded.table, decoded, model_name="p", model_version="1", parameters={"variant": "main"})
    except CorralError as exc:
        assert 400 <= status_of(exc) < 500, f"{type(exc).__name__} is a {status_of(exc)}: {exc}"


@pytest.mark.parametrize("fmt", sorted(VALID))
@FUZZ
@given(data=st.data())
def test_mutated_payloads_of_every_codec_are_replies_or_4xx(fmt: str, data: st.DataObject) -> None:
    content_type, body, headers = VALID[fmt]
    assert_client_error_or_reply(content_type, data.draw(mutated(body)), headers)


@pytest.mark.parametrize("fmt", sorted(VALID))
@FUZZ
@given(body=st.binary(max_size=300))
def test_arbitrary_bytes_in_every_format_are_4xx(fmt: str, body: bytes) -> None:
    content_type, _, headers = VALID[fmt]
    assert_client_error_or_reply(content_type, body, headers)


@pytest.mark.parametrize("fmt", ["v2 json", "records"])
@FUZZ
@given(value=json_values())
def test_any_json_value_as_a_request_is_a_reply_or_4xx(fmt: str, value: Any) -> None:
    content_type, _, _ = VALID[fmt]
    assert_client_error_or_reply(content_type, json.dumps(value).encode(), {})


@FUZZ
@given(header=st.text(max_size=12), body=st.binary(max_size=200))
def test_any_binary_header_length_is_a_reply_or_4xx(header: str, body: bytes) -> None:
    assert_client_error_or_reply("application/octet-stream", body, {"inference-header-content-length": header})


@st.composite
def spec_like(draw: st.DrawFn) -> Any:
    """Dicts shaped a little like specs (known keys, wrong values) as well as arbitrary JSON."""
    step = st.fixed_dictionaries(
        {},
        optional={
            "name": json_values(),
            "model": json_values(),
            "python": json_values(),
            "placement": json_values(),
            "resources": json_values(),
            "autoscaling": json_values(),
            "config": json_values(),
            "max_queued_requests": json_values(),
        },
    )
    top = st.fixed_dictionaries(
        {},
        optional={
            "steps": st.lists(step, max_size=3) | json_values(),
            "variants": st.dictionaries(st.text(max_size=8), st.fixed_dictionaries({"steps": st.lists(step)})),
            "traffic": json_values(),
            "router": json_values(),
            "validations": st.dictionaries(st.text(max_size=8), st.text(max_size=30)) | json_values(),
        },
    )
    return draw(top | json_values())


@FUZZ
@given(spec=spec_like())
def test_any_json_as_a_pipeline_spec_is_valid_or_a_422(spec: Any) -> None:
    try:
        parse_spec(spec)
    except CorralError as exc:
        assert status_of(exc) == 422, exc


@FUZZ
@given(
    body=st.binary(max_size=300) | json_values().map(lambda v: json.dumps(v).encode()),
    content_type=st.sampled_from(["application/json", "application/yaml", "text/yaml", "", "text/plain"]),
)
def test_any_spec_body_parses_or_is_4xx(body: bytes, content_type: str) -> None:
    try:
        parse_spec(parse_spec_body(body, content_type))
    except CorralError as exc:
        assert 400 <= status_of(exc) < 500, exc
