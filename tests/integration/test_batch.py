"""Batch inference on Ray Data: the deployed pipeline's steps over Parquet, CSV and JSON-lines files."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from cluster.sdk import BatchFailed
from examples.fraud import FEATURES, make_transactions

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, pd.DataFrame]:
    """3,000 rows over three formats and a sub-directory, plus files a run must skip."""
    root = Path(tmp_path_factory.mktemp("batch-in"))
    frame = make_transactions(3000, seed=11)[FEATURES].reset_index(drop=True)
    frame.insert(0, "id", np.arange(len(frame), dtype=np.int64))
    frame.iloc[:1500].to_parquet(root / "a.parquet", index=False)
    (root / "sub").mkdir()
    frame.iloc[1500:2500].to_csv(root / "sub" / "b.csv", index=False)
    frame.iloc[2500:].to_json(root / "c.jsonl", orient="records", lines=True)
    (root / ".hidden.csv").write_text("not,data\n")
    (root / "_SUCCESS").write_text("")
    return root, frame


def _read_output(path: Path) -> pd.DataFrame:
    return pq.read_table(path).to_pandas().sort_values("id").reset_index(drop=True)


def test_batch_output_equals_online_inference_row_for_row(admin, fraud_pipeline, inputs, tmp_path) -> None:
    root, frame = inputs
    reports: list[dict[str, Any]] = []
    result = admin.pipeline("fraud").batch(root, tmp_path / "out", progress=reports.append, poll_s=0.2)
    assert (result.rows, result.files) == (3000, 3), result
    assert result.version == fraud_pipeline["pipeline"].status()["version"] and result.variant == "main"
    assert result.seconds > 0 and result.rows_per_s > 0
    assert reports[-1]["state"] == "succeeded" and reports[-1]["rows"] == 3000
    assert reports[0]["rows_total"] is None  # CSV and JSON lines do not say how many rows they hold

    batch = _read_output(tmp_path / "out")
    online = admin.infer("fraud", frame).reset_index(drop=True)
    assert len(batch) == len(online) == 3000
    assert batch["id"].tolist() == list(range(3000))
    for column in FEATURES:  # the input columns come along
        np.testing.assert_allclose(batch[column].to_numpy(), frame[column].to_numpy())
    assert set(online.columns) <= set(batch.columns), (online.columns, batch.columns)
    for column in online.columns:
        got, want = batch[column].tolist(), online[column].tolist()
        if isinstance(want[0], list | np.ndarray):
            np.testing.assert_allclose(np.stack(got), np.stack(want), rtol=1e-6)
        else:
            assert got == want, column


def test_a_single_parquet_file_reports_its_row_total(admin, fraud_pipeline, inputs, tmp_path) -> None:
    root, _ = inputs
    reports: list[dict[str, Any]] = []
    result = admin.pipeline("fraud").batch(root / "a.parquet", tmp_path / "out", progress=reports.append)
    assert (result.rows, result.files) == (1500, 1)
    assert reports[-1]["rows_total"] == 1500


def test_batch_with_log_writes_the_rows_to_the_inference_log(admin, fraud_pipeline, inputs, tmp_path) -> None:
    root, _ = inputs
    result = admin.pipeline("fraud").batch(root / "c.jsonl", tmp_path / "out", log=True)
    assert result.rows == 500
    deadline = time.monotonic() + 20
    while True:
        logged = admin.pipeline("fraud").logs(limit=100_000)
        batch_rows = logged[logged["request_id"].str.startswith("batch-")]
        if len(batch_rows) >= 500 or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert len(batch_rows) == 500
    assert {"in.amount", "out.is_fraud", "anomaly.count"} <= set(batch_rows.columns)


def test_a_step_that_fails_fails_the_run_with_its_message(admin, fraud_pipeline, tmp_path) -> None:
    missing = tmp_path / "in" / "rows.csv"
    missing.parent.mkdir()
    make_transactions(10, seed=2)[FEATURES[:-1]].to_csv(missing, index=False)  # one feature short
    with pytest.raises(BatchFailed) as failed:
        admin.pipeline("fraud").batch(missing, tmp_path / "out")
    assert FEATURES[-1] in str(failed.value), failed.value


def test_bad_batch_requests_say_what_to_fix(admin, http, admin_headers, fraud_pipeline, inputs, tmp_path) -> None:
    root, _ = inputs
    url = "/api/v1/workspaces/default/pipelines/fraud/batch"
    out = str(tmp_path / "out")

    def post(body: Any, headers: dict[str, str] | None = None) -> tuple[int, str]:
        reply = http.post(url, json=body, headers=headers or admin_headers)
        return reply.status_code, reply.json()["error"]

    status, error = post({"inputs": [str(root / "nope.parquet")], "output": out})
    assert status == 422 and "not found" in error and "nope.parquet" in error
    status, error = post({"inputs": ["relative/dir"], "output": out})
    assert status == 422 and "relative path" in error and "absolute" in error
    (tmp_path / "notes.txt").write_text("x")
    status, error = post({"inputs": [str(tmp_path / "notes.txt")], "output": out})
    assert status == 422 and "cannot tell the format" in error and ".parquet" in error
    empty = tmp_path / "empty"
    empty.mkdir()
    status, error = post({"inputs": [str(empty)], "output": out})
    assert status == 422 and "holds no input files" in error
    status, error = post({"inputs": [str(root)], "output": str(root)})  # holds a.parquet
    assert status == 409 and "already holds 1 Parquet file" in error
    status, error = post({"inputs": [str(root)], "output": out, "colour": "red"})
    assert status == 422 and "invalid batch request" in error and "colour" in error
    status, error = post({"inputs": [], "output": out})
    assert status == 422 and "inputs" in error
    status, error = post({"inputs": [str(root)], "output": out, "variant": "nope"})
    assert status == 422 and "variant 'nope'" in error and "main" in error
    reply = http.post(url, content=b"", headers=admin_headers)
    assert reply.status_code == 400 and "empty body" in reply.json()["error"]
    viewer = {"authorization": f"Bearer {admin.create_token('viewer', 'default')}"}
    status, error = post({"inputs": [str(root)], "output": out}, viewer)
    assert status == 403, error
    reply = http.get("/api/v1/workspaces/default/batch/0123abcd", headers=admin_headers)
    assert reply.status_code == 404 and "corral batch" in reply.json()["error"]
    assert not Path(out).exists() or not list(Path(out).iterdir()), "a refused run wrote something"


def test_a_pipeline_that_is_not_deployed_needs_a_version(admin, http, admin_headers, fraud_pipeline, inputs, tmp_path):
    root, _ = inputs
    admin.pipeline("batch-draft", fraud_pipeline["spec"])  # applied, never deployed
    reply = http.post(
        "/api/v1/workspaces/default/pipelines/batch-draft/batch",
        json={"inputs": [str(root / "a.parquet")], "output": str(tmp_path / "out")},
        headers=admin_headers,
    )
    assert reply.status_code == 409 and "not deployed" in reply.json()["error"]
    result = admin.pipeline("batch-draft").batch(root / "a.parquet", tmp_path / "out", version=1)
    assert (result.rows, result.version) == (1500, 1)
