"""Uploaded step code reaches replicas through runtime_env; GPU steps place on GPU and fall back to CPU."""

from __future__ import annotations

from pathlib import Path

import pytest

from examples.fraud import FEATURES

pytestmark = pytest.mark.integration
RECORDS = {"content-type": "application/json; format=pandas-records"}

STEP_SOURCE = '''
import pyarrow as pa
import pyarrow.compute as pc


class AmountPerTx:
    """A data scientist's own feature: amount per recent transaction."""

    def __init__(self, config):
        self.output = config.get("output", "amount_per_tx")

    def __call__(self, table):
        value = pc.divide(table["amount"], pc.add(pc.cast(table["n_tx"], pa.float64()), 1.0))
        return table.append_column(self.output, value)
'''


@pytest.fixture(scope="module")
def code_pipeline(admin, tmp_path_factory):
    path = Path(tmp_path_factory.mktemp("code")) / "my_features.py"
    path.write_text(STEP_SOURCE)
    info = admin.upload_code("my-features", path)
    spec = {
        "steps": [
            {
                "name": "feat",
                "python": "my_features:AmountPerTx",
                "code": f"my-features:{info['version']}",
                "config": {"output": "apt"},
                "resources": {"num_cpus": 0.25},
            }
        ]
    }
    pipeline = admin.pipeline("custom", spec)
    pipeline.deploy()
    yield pipeline
    pipeline.undeploy()


def test_uploaded_code_runs_in_its_own_deployment(code_pipeline, http, admin_headers) -> None:
    reply = http.post(
        "/ws/default/v2/models/custom/infer",
        json=[{"amount": 100.0, "n_tx": 3}],
        headers={**admin_headers, **RECORDS},
    )
    assert reply.status_code == 200, reply.text
    assert reply.json() == [{"amount": 100.0, "n_tx": 3, "apt": 25.0}]


def test_step_error_from_bad_input_is_422_not_500(code_pipeline, http, admin_headers) -> None:
    reply = http.post(
        "/ws/default/v2/models/custom/infer", json=[{"amount": 100.0}], headers={**admin_headers, **RECORDS}
    )
    assert reply.status_code == 422, reply.text
    assert "feat" in reply.json()["error"]


@pytest.fixture(scope="module")
def gpu_pipeline(admin, fraud_pipeline):
    spec = {
        "steps": [
            {
                "name": "model",
                "model": "fraud",
                "columns": FEATURES,
                "resources": {"num_cpus": 0.25, "num_gpus": 1},
            }
        ]
    }
    pipeline = admin.pipeline("on-gpu", spec)
    pipeline.deploy()
    yield pipeline
    pipeline.undeploy()


def test_gpu_step_is_placed_on_a_gpu_and_falls_back_to_cpu_runtime(gpu_pipeline, http, admin_headers) -> None:
    from ray import serve

    info = (
        serve.get_deployment_handle("main.model", app_name="default--on-gpu")
        .describe.remote()
        .result(timeout_s=60)
    )
    assert info["gpu_ids"] == ["0"]  # Ray gave the replica the (logical) GPU
    assert info["providers"] == ["CPUExecutionProvider"]  # no CUDA runtime here: CPU fallback, logged
    reply = http.post(
        "/ws/default/v2/models/on-gpu/infer",
        json=[{c: 1.0 for c in FEATURES}],
        headers={**admin_headers, **RECORDS},
    )
    assert reply.status_code == 200, reply.text
