"""The whole cluster on object storage: `corral up` with CORRAL_STORAGE_URI on a real S3 server
(moto's, started by tests/s3.py on 127.0.0.1). Models and datasets are stored there, replicas load
their models from there, inference logs are written and queried (DuckDB through pyarrow) there, and
a batch run reads its inputs from and writes its outputs to s3:// URIs. The session's own cluster
comes back afterwards."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest

from examples.fraud import FEATURES, fraud_pipeline_spec, make_transactions
from tests.s3 import S3Server, s3_server  # noqa: F401 (the fixture)

pytestmark = [pytest.mark.integration, pytest.mark.slow]
RECORDS = {"content-type": "application/json; format=pandas-records"}


def _objects(fs: pafs.FileSystem, root: str) -> list[str]:
    found = fs.get_file_info(pafs.FileSelector(root, recursive=True, allow_not_found=True))
    return [f.path for f in found if f.type == pafs.FileType.File]


def test_corral_runs_on_s3_storage(
    corral: Any,
    s3_server: S3Server,  # noqa: F811
    fraud_model: Any,
    tmp_path: Path,
) -> None:
    from cluster import lifecycle
    from cluster.sdk import Client

    storage = s3_server.uri("corral")
    from cluster.settings import CorralSettings

    # Built anew (not model_copy), so the logs URI defaults to <storage>/logs like a user's would.
    on_s3 = CorralSettings(**{**corral.model_dump(), "home": tmp_path / "home", "storage_uri": storage, "logs_uri": ""})
    assert on_s3.logs_uri.startswith(f"s3://{s3_server.bucket}/corral/logs?")
    fs = s3_server.filesystem()
    bucket = s3_server.bucket
    lifecycle.down(corral, say=print)
    try:
        lifecycle.up(on_s3, say=print)
        token = on_s3.admin_token_path.read_text().strip()
        admin = Client(on_s3.base_url, token)
        info = admin.upload_model("s3-fraud", fraud_model["model"], n_features=len(FEATURES))
        assert f"{bucket}/corral/{info['sha256'][:2]}/{info['sha256']}" in _objects(fs, f"{bucket}/corral")
        assert not (on_s3.home / "artifacts").exists(), "artifacts went to the local disk"
        spec = fraud_pipeline_spec(f"s3-fraud:{info['version']}", fraud_model["mean"], fraud_model["std"])
        pipeline = admin.pipeline("s3-fraud", spec)
        pipeline.deploy()  # the router loads its model from S3

        rows = make_transactions(30, seed=8)[FEATURES]
        reply = httpx.post(
            f"{on_s3.base_url}/ws/default/v2/models/s3-fraud/infer",
            content=rows.to_json(orient="records"),
            headers={"authorization": f"Bearer {token}", **RECORDS},
            timeout=60,
        )
        assert reply.status_code == 200, reply.text
        online = reply.json()

        deadline = time.monotonic() + 30  # the sink writes within about a second, to S3
        while len(logged := pipeline.logs()) < 30:
            assert time.monotonic() < deadline, f"{len(logged)} of 30 rows logged"
            time.sleep(0.5)
        assert [round(v, 6) for v in logged["in.amount"]] == [round(v, 6) for v in rows["amount"]]
        assert any(path.endswith(".parquet") for path in _objects(fs, f"{bucket}/corral/logs/inferences"))
        assert not (on_s3.home / "logs").exists(), "logs went to the local disk"

        dataset = admin.upload_dataset("s3-ref", rows)
        assert admin.dataset_versions("s3-ref")[0]["sha256"] == dataset["sha256"]

        frame = make_transactions(2000, seed=9)[FEATURES].reset_index(drop=True)
        frame.insert(0, "id", np.arange(len(frame)))
        for index, part in enumerate((frame.iloc[:1200], frame.iloc[1200:])):
            pq.write_table(
                pa.Table.from_pandas(part, preserve_index=False),
                f"{bucket}/batch-in/part-{index}.parquet",
                filesystem=fs,
            )
        result = pipeline.batch(s3_server.uri("batch-in"), s3_server.uri("batch-out"))
        assert (result.rows, result.files) == (2000, 2), result
        written = ds.dataset(f"{bucket}/batch-out", filesystem=fs, format="parquet").to_table().to_pandas()
        written = written.sort_values("id").reset_index(drop=True)
        assert written["id"].tolist() == list(range(2000))
        expected = admin.infer("s3-fraud", frame.drop(columns="id")).reset_index(drop=True)
        assert written["is_fraud"].tolist() == expected["is_fraud"].tolist()
        assert [row["is_fraud"] for row in online] == admin.infer("s3-fraud", rows)["is_fraud"].tolist()
    finally:
        lifecycle.down(on_s3, say=print)
        lifecycle.up(corral, say=print)
