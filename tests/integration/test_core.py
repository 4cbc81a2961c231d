"""The core on a real local Ray cluster: deploy the demo pipeline and call it every way a user can."""

from __future__ import annotations

import io
import json
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from examples.fraud import FEATURES, LABEL, make_transactions, standardise

pytestmark = pytest.mark.integration
INFER = "/ws/default/v2/models/fraud/infer"
RECORDS = "application/json; format=pandas-records"


@pytest.fixture(scope="module")
def rows() -> pd.DataFrame:
    return make_transactions(50, seed=11)[FEATURES]


@pytest.fixture(scope="module")
def expected(fraud_model: dict[str, Any], rows: pd.DataFrame) -> np.ndarray:
    """What the model itself says, computed without Corral."""
    model = fraud_model["model"]
    return model.predict_proba(standardise(rows, fraud_model["mean"], fraud_model["std"]))[:, 1]


def _arrow(table: pa.Table, stream: bool) -> bytes:
    sink = io.BytesIO()
    writer = pa.ipc.new_stream(sink, table.schema) if stream else pa.ipc.new_file(sink, table.schema)
    with writer:
        writer.write_table(table)
    return sink.getvalue()


def test_v2_json(fraud_pipeline, http, admin_headers, rows, expected) -> None:
    body = {
        "id": "req-1",
        "inputs": [
            {"name": c, "shape": [len(rows)], "datatype": "FP64", "data": rows[c].tolist()} for c in FEATURES
        ],
    }
    reply = http.post(INFER, json=body, headers=admin_headers)
    assert reply.status_code == 200, reply.text
    out = reply.json()
    assert out["model_name"] == "fraud" and out["model_version"] == "1" and out["id"] == "req-1"
    assert out["parameters"]["variant"] == "main"
    assert reply.headers["x-corral-variant"] == "main"
    assert reply.headers["x-corral-pipeline-version"] == "1"
    outputs = {o["name"]: o for o in out["outputs"]}
    probs = np.array(outputs["probabilities"]["data"]).reshape(outputs["probabilities"]["shape"])
    np.testing.assert_allclose(probs[:, 1], expected, rtol=1e-4, atol=1e-6)
    assert outputs[LABEL]["data"] == [int(p > 0.5) for p in probs[:, 1]]


def test_pandas_records(fraud_pipeline, http, admin_headers, rows, expected) -> None:
    reply = http.post(
        INFER, content=rows.to_json(orient="records"), headers={**admin_headers, "content-type": RECORDS}
    )
    assert reply.status_code == 200, reply.text
    assert reply.headers["content-type"].startswith("application/json")
    records = reply.json()
    assert len(records) == len(rows)
    np.testing.assert_allclose([r["probabilities"][1] for r in records], expected, rtol=1e-4, atol=1e-6)
    assert [r[LABEL] for r in records] == [int(p > 0.5) for p in expected]


@pytest.mark.parametrize("stream", [False, True])
def test_arrow_file_and_stream(fraud_pipeline, http, admin_headers, rows, expected, stream: bool) -> None:
    media = "application/vnd.apache.arrow." + ("stream" if stream else "file")
    table = pa.Table.from_pandas(rows, preserve_index=False)
    reply = http.post(INFER, content=_arrow(table, stream), headers={**admin_headers, "content-type": media})
    assert reply.status_code == 200, reply.text
    assert reply.headers["content-type"] == media
    reader = pa.ipc.open_stream(reply.content) if stream else pa.ipc.open_file(reply.content)
    out = reader.read_all()
    probs = np.array(out.column("probabilities").to_pylist())[:, 1]
    np.testing.assert_allclose(probs, expected, rtol=1e-4, atol=1e-6)


def test_tritonclient_works_unchanged(fraud_pipeline, corral, admin_headers, rows, expected) -> None:
    import tritonclient.http as triton

    admin_headers = dict(admin_headers)  # tritonclient adds its own headers to the dict it is given

    client = triton.InferenceServerClient(url=corral.base_url.removeprefix("http://") + "/ws/default")
    assert client.is_server_live(headers=admin_headers)
    assert client.is_model_ready("fraud", headers=admin_headers)
    meta = client.get_model_metadata("fraud", headers=admin_headers)
    assert [i["name"] for i in meta["inputs"]] == FEATURES
    assert "probabilities" in [o["name"] for o in meta["outputs"]]
    inputs = []
    for c in FEATURES:
        tensor = triton.InferInput(c, [len(rows)], "FP32")
        tensor.set_data_from_numpy(rows[c].to_numpy(np.float32))  # binary by default
        inputs.append(tensor)
    result = client.infer("fraud", inputs, headers=admin_headers)
    np.testing.assert_allclose(result.as_numpy("probabilities")[:, 1], expected, rtol=1e-3, atol=1e-5)
    assert result.get_response()["parameters"]["variant"] == "main"


def test_serve_handle(fraud_pipeline, rows, expected) -> None:
    from ray import serve

    handle = serve.get_app_handle("default--fraud")
    frame = handle.infer.remote(rows).result(timeout_s=60)
    assert isinstance(frame, pd.DataFrame)
    np.testing.assert_allclose(
        np.stack(frame["probabilities"].to_numpy())[:, 1], expected, rtol=1e-4, atol=1e-6
    )
    table = handle.infer.remote(pa.Table.from_pandas(rows, preserve_index=False)).result(timeout_s=60)
    assert isinstance(table, pa.Table) and table.num_rows == len(rows)


def test_sdk_infer_returns_the_type_it_was_given(fraud_pipeline, admin, rows, expected) -> None:
    frame = admin.infer("fraud", rows)
    assert isinstance(frame, pd.DataFrame)
    assert frame[LABEL].tolist() == [int(p > 0.5) for p in expected]
    as_dict = admin.infer("fraud", rows.head(3).to_dict(orient="list"))
    assert isinstance(as_dict, dict) and len(as_dict[LABEL]) == 3


def test_pipeline_listing_and_status(fraud_pipeline, admin) -> None:
    status = admin.pipeline("fraud").status()
    assert status["status"] == "running" and status["version"] == 1
    assert {p["name"] for p in admin.pipelines()} >= {"fraud"}


# --- bad input: each gets the contract's status and a message that says how to fix it ----------------


def _post(http, headers, body: bytes | str, content_type: str | None, path: str = INFER):
    extra = {"content-type": content_type} if content_type else {}
    return http.post(path, content=body, headers={**headers, **extra})


@pytest.mark.parametrize(
    ("body", "content_type", "status", "fragment"),
    [
        (b"", "application/json", 400, "empty"),
        (b"{not json", "application/json", 400, "JSON"),
        (b"\x00\x01garbage-arrow", "application/vnd.apache.arrow.file", 400, "Arrow"),
        (b"<xml/>", "application/xml", 415, "application/json"),
        (json.dumps([{"amount": 1.0}]), RECORDS, 422, "is missing"),  # missing column
        (json.dumps([{c: "high" for c in FEATURES}]), RECORDS, 422, "numbers"),  # wrong dtype
        (json.dumps([{**{c: 1.0 for c in FEATURES}, "amount": None}]), RECORDS, 422, "null"),  # NaN/null
        (
            json.dumps({"inputs": [{"name": "amount", "shape": [2, 3], "datatype": "FP32", "data": [1, 2]}]}),
            "application/json",
            422,
            "shape",
        ),  # wrong shape
    ],
)
def test_bad_payloads(fraud_pipeline, http, admin_headers, body, content_type, status, fragment) -> None:
    reply = _post(http, admin_headers, body, content_type)
    assert reply.status_code == status, reply.text
    assert fragment.lower() in reply.json()["error"].lower()


def test_truncated_arrow_is_400(fraud_pipeline, http, admin_headers, rows) -> None:
    data = _arrow(pa.Table.from_pandas(rows, preserve_index=False), stream=True)
    reply = _post(http, admin_headers, data[: len(data) // 2], "application/vnd.apache.arrow.stream")
    assert reply.status_code == 400, reply.text


def test_payload_over_limit_is_413(fraud_pipeline, http, admin_headers, corral) -> None:
    big = b"[" + b"0," * (corral.max_payload_bytes // 2) + b"0]"
    reply = _post(http, admin_headers, big, RECORDS)
    assert reply.status_code == 413, reply.text
    assert "CORRAL_MAX_PAYLOAD_BYTES" in reply.json()["error"]


@pytest.mark.parametrize(
    "path",
    [
        "/api/v1/workspaces/default/pipelines/huge",
        "/api/v1/workspaces/default/pipelines/fraud/traffic",
        "/api/v1/workspaces/default/pipelines/fraud/explain",
    ],
)
def test_a_control_body_over_the_json_limit_is_413(fraud_pipeline, http, admin_headers, path) -> None:
    big = b'{"steps": [' + b" " * (8 * 1024 * 1024) + b"]}"  # CORRAL_MAX_JSON_BYTES is 8 MiB by default
    method = "POST" if path.endswith("explain") else "PUT"
    reply = http.request(method, path, content=big, headers={**admin_headers, "content-type": "application/json"})
    assert reply.status_code == 413, reply.text
    assert "over the limit of 8388608" in reply.json()["error"] and "CORRAL_MAX_JSON_BYTES" in reply.json()["error"]
    assert http.get("/api/v1/workspaces/default/pipelines/huge", headers=admin_headers).status_code == 404


def test_unknown_pipeline_is_404(corral, http, admin_headers) -> None:
    reply = _post(http, admin_headers, b"[]", RECORDS, "/ws/default/v2/models/nope/infer")
    assert reply.status_code == 404
    assert "nope" in reply.json()["error"]


def test_pipeline_still_serves_after_bad_requests(fraud_pipeline, http, admin_headers, rows) -> None:
    reply = http.post(
        INFER,
        content=rows.head(1).to_json(orient="records"),
        headers={**admin_headers, "content-type": RECORDS},
    )
    assert reply.status_code == 200
