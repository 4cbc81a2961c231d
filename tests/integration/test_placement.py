"""Placement on a real cluster: inline and own steps give the same replies in every wire format,
`auto` gives only GPU steps a deployment, and a broken inline step never takes the router down."""

from __future__ import annotations

import copy
import io
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from examples.fraud import FEATURES, make_transactions

pytestmark = pytest.mark.integration
RECORDS = "application/json; format=pandas-records"
URL = "/ws/default/v2/models/{}/infer"

BROKEN_STEPS = """
import pyarrow as pa


class Raises:
    def __init__(self, config):
        pass

    def __call__(self, table):
        raise RuntimeError("division by zero in my feature")


class DropsRows:
    def __init__(self, config):
        pass

    def __call__(self, table):
        return table.slice(0, 1)


class ReturnsList:
    def __init__(self, config):
        pass

    def __call__(self, table):
        return table.to_pylist()
"""


def with_placement(spec: dict[str, Any], placement: str) -> dict[str, Any]:
    out = copy.deepcopy(spec)
    for step in out["steps"]:
        step["placement"] = placement
    return out


@pytest.fixture(scope="module")
def placed(admin: Any, fraud_pipeline: dict[str, Any]) -> Any:
    """The demo pipeline twice: `auto` (every step inline in the router) and `own` (three deployments)."""
    pipelines = {}
    for placement in ("auto", "own"):
        pipeline = admin.pipeline(f"fraud-{placement}", with_placement(fraud_pipeline["spec"], placement))
        pipeline.deploy()
        pipelines[placement] = pipeline
    yield pipelines
    for pipeline in pipelines.values():
        pipeline.undeploy()


@pytest.fixture(scope="module")
def rows() -> pd.DataFrame:
    return make_transactions(40, seed=5)[FEATURES]


def deployments_of(app: str) -> set[str]:
    from ray import serve

    return set(serve.status().applications[app].deployments)


def test_auto_runs_every_cpu_step_in_the_router_and_own_gives_each_a_deployment(placed: Any) -> None:
    assert deployments_of("default--fraud-auto") == {"router"}
    assert deployments_of("default--fraud-own") == {"router", "main.pre", "main.model", "main.post"}


def _v2(rows: pd.DataFrame) -> dict[str, Any]:
    return {
        "inputs": [{"name": c, "shape": [len(rows)], "datatype": "FP64", "data": rows[c].tolist()} for c in FEATURES]
    }


def _arrow(rows: pd.DataFrame, stream: bool) -> bytes:
    table = pa.Table.from_pandas(rows, preserve_index=False)
    sink = io.BytesIO()
    writer = pa.ipc.new_stream(sink, table.schema) if stream else pa.ipc.new_file(sink, table.schema)
    with writer:
        writer.write_table(table)
    return sink.getvalue()


def _reply(http: Any, headers: dict[str, str], name: str, fmt: str, rows: pd.DataFrame) -> Any:
    if fmt == "v2-json":
        reply = http.post(URL.format(name), json=_v2(rows), headers=headers)
    elif fmt == "records":
        reply = http.post(
            URL.format(name), content=rows.to_json(orient="records"), headers={**headers, "content-type": RECORDS}
        )
    else:
        media = f"application/vnd.apache.arrow.{fmt.removeprefix('arrow-')}"
        reply = http.post(
            URL.format(name), content=_arrow(rows, fmt == "arrow-stream"), headers={**headers, "content-type": media}
        )
    assert reply.status_code == 200, reply.text
    if fmt == "v2-json":
        return {o["name"]: o["data"] for o in reply.json()["outputs"]}
    if fmt == "records":
        return reply.json()
    reader = pa.ipc.open_stream(reply.content) if fmt == "arrow-stream" else pa.ipc.open_file(reply.content)
    return reader.read_all().to_pydict()


@pytest.mark.parametrize("fmt", ["v2-json", "records", "arrow-file", "arrow-stream"])
def test_auto_and_own_reply_identically(
    placed: Any, http: Any, admin_headers: dict[str, str], rows: pd.DataFrame, fmt: str
) -> None:
    auto = _reply(http, admin_headers, "fraud-auto", fmt, rows)
    own = _reply(http, admin_headers, "fraud-own", fmt, rows)
    assert auto == own
    assert len(auto if fmt == "records" else auto["is_fraud"]) == len(rows)


def test_auto_and_own_reply_identically_in_binary_v2(
    placed: Any, corral: Any, admin_headers: dict[str, str], rows: pd.DataFrame
) -> None:
    import tritonclient.http as triton

    client = triton.InferenceServerClient(url=corral.base_url.removeprefix("http://") + "/ws/default")
    outputs = {}
    for placement in ("auto", "own"):
        inputs = []
        for c in FEATURES:
            tensor = triton.InferInput(c, [len(rows)], "FP64")
            tensor.set_data_from_numpy(rows[c].to_numpy(np.float64))  # binary tensors both ways
            inputs.append(tensor)
        result = client.infer(f"fraud-{placement}", inputs, headers=dict(admin_headers))
        outputs[placement] = {name: result.as_numpy(name) for name in ("probabilities", "is_fraud")}
    for name in ("probabilities", "is_fraud"):
        np.testing.assert_array_equal(outputs["auto"][name], outputs["own"][name])


def test_auto_gives_a_gpu_step_its_own_deployment_and_keeps_the_rest_inline(
    admin: Any, fraud_pipeline: dict[str, Any], http: Any, admin_headers: dict[str, str], rows: pd.DataFrame
) -> None:
    spec = copy.deepcopy(fraud_pipeline["spec"])
    spec["steps"][1]["resources"] = {"num_cpus": 0.25, "num_gpus": 1}  # the session's cluster has one logical GPU
    pipeline = admin.pipeline("fraud-gpu", spec)
    pipeline.deploy()
    try:
        assert deployments_of("default--fraud-gpu") == {"router", "main.model"}
        assert _reply(http, admin_headers, "fraud-gpu", "records", rows) == _reply(
            http, admin_headers, "fraud", "records", rows
        )
    finally:
        pipeline.undeploy()


@pytest.mark.parametrize(
    ("resources", "placement", "message"),
    [
        ({"num_gpus": 1}, "inline", "asks for a GPU or accelerator, so it cannot run inline"),
        ({"accelerator_type": "T4"}, "inline", "asks for a GPU or accelerator, so it cannot run inline"),
        ({}, "sidecar", "'auto', 'inline' or 'own'"),
    ],
)
def test_bad_placements_are_422_naming_the_step(
    http: Any,
    admin_headers: dict[str, str],
    fraud_pipeline: dict[str, Any],
    resources: dict[str, Any],
    placement: str,
    message: str,
) -> None:
    spec = copy.deepcopy(fraud_pipeline["spec"])
    spec["steps"][1].update(placement=placement, resources={"num_cpus": 0.25, **resources})
    reply = http.put("/api/v1/workspaces/default/pipelines/bad-placement", json=spec, headers=admin_headers)
    assert reply.status_code == 422, reply.text
    assert message in reply.json()["error"]
    assert http.get("/api/v1/workspaces/default/pipelines/bad-placement", headers=admin_headers).status_code == 404


@pytest.fixture(scope="module")
def broken(admin: Any, tmp_path_factory: pytest.TempPathFactory) -> Any:
    path = Path(tmp_path_factory.mktemp("broken")) / "broken_steps.py"
    path.write_text(BROKEN_STEPS)
    code = admin.upload_code("broken-steps", path)
    ref = f"broken-steps:{code['version']}"
    variants = {
        "good": {"steps": [{"name": "pre", "python": "pipelines.builtin:Select", "config": {"columns": ["x"]}}]},
    }
    for variant, cls in (("raises", "Raises"), ("drops", "DropsRows"), ("lists", "ReturnsList")):
        variants[variant] = {"steps": [{"name": "feature", "python": f"broken_steps:{cls}", "code": ref}]}
    spec = {
        "variants": variants,
        "traffic": {"weights": {"good": 1}},
        "router": {"autoscaling": {"min_replicas": 1, "max_replicas": 1}},
    }
    pipeline = admin.pipeline("broken", spec)
    pipeline.deploy()
    yield pipeline
    pipeline.undeploy()


@pytest.mark.parametrize(
    ("variant", "message"),
    [
        ("raises", "step 'feature' failed: RuntimeError: division by zero in my feature. Fix the step's code"),
        ("drops", "step 'feature' returned 1 rows for 3 input rows: a step must return one row per input row"),
        ("lists", "step 'feature' returned list, not a pyarrow.Table: make the step return a table"),
    ],
)
def test_a_broken_inline_step_is_a_422_and_the_router_keeps_serving(
    broken: Any, http: Any, admin_headers: dict[str, str], variant: str, message: str
) -> None:
    from ray import serve

    router = serve.get_app_handle("default--broken")
    replica = router.info.remote().result(timeout_s=30)["replica"]
    broken.set_traffic({variant: 1})
    try:
        reply = http.post(
            URL.format("broken"), json=[{"x": 1.0}] * 3, headers={**admin_headers, "content-type": RECORDS}
        )
        assert reply.status_code == 422, reply.text
        assert message in reply.json()["error"]
    finally:
        broken.set_traffic({"good": 1})
    reply = http.post(URL.format("broken"), json=[{"x": 2.0}], headers={**admin_headers, "content-type": RECORDS})
    assert reply.status_code == 200 and reply.json() == [{"x": 2.0}]
    assert router.info.remote().result(timeout_s=30)["replica"] == replica  # no crash, no restart
