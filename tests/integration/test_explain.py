"""Explanations of a deployed pipeline on a real cluster: alibi in the explainer app, predicting through
the router, scale to zero and back, and the bad requests that must be 4xx."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from onnx import TensorProto, helper

from tests.integration.helpers import upload

pytestmark = [pytest.mark.integration, pytest.mark.slow]
FEATURES = ["f0", "f1", "f2", "f3"]
EXPLAIN = "/api/v1/workspaces/default/pipelines/why/explain"


def logit_model(weights: list[float], name: str) -> bytes:
    """ONNX model over x [N, len(weights)]: score = sigmoid(4 * x . w), label = int(x . w > 0)."""
    width = len(weights)
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["x", "w"], ["z2"]),
            helper.make_node("Squeeze", ["z2", "axis1"], ["z"]),
            helper.make_node("Mul", ["z", "four"], ["z4"]),
            helper.make_node("Sigmoid", ["z4"], ["score"]),
            helper.make_node("Greater", ["z", "zero"], ["positive"]),
            helper.make_node("Cast", ["positive"], ["label"], to=TensorProto.INT64),
        ],
        name,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, width])],
        [
            helper.make_tensor_value_info("label", TensorProto.INT64, [None]),
            helper.make_tensor_value_info("score", TensorProto.FLOAT, [None]),
        ],
        [
            helper.make_tensor("w", TensorProto.FLOAT, [width, 1], weights),
            helper.make_tensor("axis1", TensorProto.INT64, [1], [1]),
            helper.make_tensor("four", TensorProto.FLOAT, [], [4.0]),
            helper.make_tensor("zero", TensorProto.FLOAT, [], [0.0]),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return bytes(model.SerializeToString())


def rows(n: int, seed: int) -> list[dict[str, float]]:
    rng = np.random.default_rng(seed)
    return [{f: float(v) for f, v in zip(FEATURES, rng.normal(size=4), strict=True)} for _ in range(n)]


@pytest.fixture(scope="module")
def why(admin: Any, http: httpx.Client, admin_headers: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Any:
    """Pipeline `why`: variant `only_f3` (served) is a model of f3 alone; variant `dropper` (weight 0)
    selects f0 and f3, dropping f1 and f2, before a model of f0 + f3; variant `coloured` (weight 0)
    one-hot encodes a string column `colour` before a model of (colour == red) + f3."""
    tmp = Path(tmp_path_factory.mktemp("explain-models"))
    only_f3 = upload(admin, "only-f3", logit_model([0.0, 0.0, 0.0, 1.0], "only_f3"), tmp)
    f0_f3 = upload(admin, "f0-f3", logit_model([1.0, 1.0], "f0_f3"), tmp)
    cheap = {"num_cpus": 0.1}
    spec = {
        "variants": {
            "only_f3": {"steps": [{"name": "model", "model": only_f3, "columns": FEATURES, "resources": cheap}]},
            "dropper": {
                "steps": [
                    {
                        "name": "pre",
                        "python": "pipelines.builtin:Select",
                        "config": {"columns": ["f0", "f3"]},
                        "resources": cheap,
                    },
                    {"name": "model", "model": f0_f3, "columns": ["f0", "f3"], "resources": cheap},
                ]
            },
            "coloured": {
                "steps": [
                    {
                        "name": "encode",
                        "python": "pipelines.builtin:OneHot",
                        "config": {"column": "colour", "categories": ["red", "green", "blue"]},
                        "resources": cheap,
                    },
                    {"name": "model", "model": f0_f3, "columns": ["colour_red", "f3"], "resources": cheap},
                ]
            },
        },
        "traffic": {"weights": {"only_f3": 100, "dropper": 0, "coloured": 0}},
    }
    pipeline = admin.pipeline("why", spec)
    pipeline.deploy()
    reply = http.post(
        "/ws/default/v2/models/why/infer",
        json=rows(300, seed=1),
        headers={**admin_headers, "content-type": "application/json; format=pandas-records"},
    )
    assert reply.status_code == 200, reply.text
    yield pipeline
    pipeline.undeploy()


def explain(http: httpx.Client, headers: dict[str, str], body: dict[str, Any]) -> dict[str, Any]:
    reply = http.post(EXPLAIN, json=body, headers=headers)
    assert reply.status_code == 200, reply.text
    result: dict[str, Any] = reply.json()
    return result


def reference(n: int = 200, seed: int = 2) -> dict[str, Any]:
    return {"values": rows(n, seed=seed)}


def test_anchors_names_f3_with_high_precision(why: Any, http: httpx.Client, admin_headers: dict[str, str]) -> None:
    instance = {"f0": 0.3, "f1": -1.2, "f2": 0.8, "f3": 0.9}
    result = explain(http, admin_headers, {"method": "anchors", "instances": [instance], "reference": reference()})
    data, meta = result["data"], result["meta"]
    assert data["anchor"] and all(p.startswith("f3") for p in data["anchor"]), data
    assert data["precision"] >= 0.95
    assert data["prediction"] == 1
    assert meta["pipeline"] == "why" and meta["variant"] == "only_f3" and meta["version"] == 1
    assert meta["reference"] == {"source": "values", "rows": 200}
    assert meta["method"] == "anchors" and meta["params"]["threshold"] == 0.95
    assert meta["predict_calls"] >= 1


def test_kernel_shap_and_permutation_rank_f3_first(why: Any, http: httpx.Client, admin_headers: dict[str, str]) -> None:
    instances = rows(3, seed=3)
    shap = explain(http, admin_headers, {"method": "kernel_shap", "instances": instances, "reference": reference()})
    assert shap["data"]["importances"][0]["feature"] == "f3"
    assert shap["meta"]["output"] == "score"
    values = np.array(shap["data"]["shap_values"])
    assert values.shape == (3, 4)
    assert np.allclose(values[:, :3], 0.0, atol=1e-6)
    # additivity: expected value + SHAP values = the pipeline's own prediction for each row
    sums = shap["data"]["expected_value"] + values.sum(axis=1)
    assert np.allclose(sums, shap["data"]["predictions"], atol=1e-4)

    labelled = rows(200, seed=4)
    labels = [int(r["f3"] > 0) for r in labelled]
    perm = explain(http, admin_headers, {"method": "permutation", "instances": labelled, "labels": labels})
    ranked = perm["data"]["importances"]
    assert ranked[0]["feature"] == "f3" and ranked[0]["importance"] > 0.3
    assert all(item["importance"] == 0.0 for item in ranked[1:])
    assert perm["data"]["metric"] == "accuracy" and perm["data"]["baseline"] == 1.0
    assert perm["meta"]["reference"]["source"] == "instances"


def test_ale_is_monotone_for_f3_and_flat_for_the_rest(
    why: Any, http: httpx.Client, admin_headers: dict[str, str]
) -> None:
    result = explain(http, admin_headers, {"method": "ale", "reference": reference(400)})
    data = result["data"]
    effects = dict(zip(data["feature_names"], data["effects"], strict=True))
    f3 = np.array(effects["f3"])
    assert np.all(np.diff(f3) >= -1e-9) and f3[-1] - f3[0] > 0.5
    for name in ("f0", "f1", "f2"):
        assert np.max(np.abs(effects[name])) < 1e-6, (name, effects[name])


def test_explanations_cover_pre_processing(why: Any, http: httpx.Client, admin_headers: dict[str, str]) -> None:
    """Variant `dropper` selects f0 and f3 before its model: f1 and f2 get exactly zero importance."""
    body = {
        "method": "kernel_shap",
        "instances": rows(2, seed=5),
        "reference": reference(),
        "params": {"variant": "dropper"},
    }
    result = explain(http, admin_headers, body)
    importance = {item["feature"]: item["importance"] for item in result["data"]["importances"]}
    assert importance["f1"] == 0.0 and importance["f2"] == 0.0
    assert importance["f0"] > 0.01 and importance["f3"] > 0.01
    assert result["meta"]["variant"] == "dropper"


def test_a_categorical_input_through_a_one_hot_step(
    why: Any, http: httpx.Client, admin_headers: dict[str, str]
) -> None:
    rng = np.random.default_rng(14)
    coloured = [{**row, "colour": str(rng.choice(["red", "green", "blue"]))} for row in rows(200, seed=14)]
    params = {"variant": "coloured", "features": ["colour", "f3"], "grid_resolution": 5}
    pd_result = explain(http, admin_headers, {"method": "pd", "reference": {"values": coloured}, "params": params})
    values, effects = pd_result["data"]["values"][0], pd_result["data"]["effects"][0]
    assert sorted(values) == ["blue", "green", "red"]
    by_colour = dict(zip(values, effects, strict=True))
    assert by_colour["red"] > by_colour["blue"] + 0.1 and abs(by_colour["blue"] - by_colour["green"]) < 1e-6
    assert pd_result["meta"]["categorical"] == {"colour": ["blue", "green", "red"]}

    instance = {"f0": 0.0, "f1": 0.0, "f2": 0.0, "f3": -0.4, "colour": "red"}
    body = {
        "method": "kernel_shap",
        "instances": [instance],
        "reference": {"values": coloured},
        "params": {"variant": "coloured"},
    }
    importance = {i["feature"]: i["importance"] for i in explain(http, admin_headers, body)["data"]["importances"]}
    assert importance["colour"] > 0.05 and importance["f3"] > 0.01
    assert importance["f0"] == importance["f1"] == importance["f2"] == 0.0
    unseen = {**body, "instances": [{**instance, "colour": "purple"}]}
    reply = http.post(EXPLAIN, json=unseen, headers=admin_headers)
    assert reply.status_code == 422 and "purple" in reply.json()["error"]


def test_reference_from_logged_inputs_and_explainer_calls_are_not_logged(
    why: Any, http: httpx.Client, admin_headers: dict[str, str]
) -> None:
    before = len(why.logs(limit=100_000))
    result = explain(http, admin_headers, {"method": "pd", "params": {"features": ["f3", "f1"], "grid_resolution": 5}})
    assert result["meta"]["reference"]["source"] == "logs"
    assert result["meta"]["reference"]["rows"] >= 300
    effects = dict(zip(result["data"]["feature_names"], result["data"]["effects"], strict=True))
    assert effects["f3"][-1] > effects["f3"][0] + 0.5
    assert max(effects["f1"]) - min(effects["f1"]) < 1e-6
    time.sleep(1.0)  # the log sink writes within ~0.5 s: any explainer rows would be there by now
    assert len(why.logs(limit=100_000)) == before


def test_logged_reference_leaves_out_a_column_only_some_clients_sent(
    why: Any, http: httpx.Client, admin_headers: dict[str, str]
) -> None:
    tagged = [{**row, "ticket": f"t-{i}"} for i, row in enumerate(rows(20, seed=13))]
    reply = http.post(
        "/ws/default/v2/models/why/infer",
        json=tagged,
        headers={**admin_headers, "content-type": "application/json; format=pandas-records"},
    )
    assert reply.status_code == 200, reply.text
    time.sleep(1.0)  # the log sink writes within ~0.5 s
    local = explain(http, admin_headers, {"method": "kernel_shap", "instances": rows(1, seed=14)})
    assert local["meta"]["reference"]["columns_dropped"] == ["ticket"]
    assert local["data"]["feature_names"] == FEATURES
    overall = explain(http, admin_headers, {"method": "pd", "params": {"features": ["f3"], "grid_resolution": 3}})
    assert overall["meta"]["reference"]["columns_dropped"] == ["ticket"]  # 20 of 320+ rows have it
    with_ticket = {"method": "kernel_shap", "instances": tagged[:1]}
    reply = http.post(EXPLAIN, json=with_ticket, headers=admin_headers)
    assert reply.status_code == 200, reply.text  # the instance has it: the reference keeps it (as a category)
    assert "ticket" in reply.json()["data"]["feature_names"]


def test_sdk_explain_chart_and_cache(why: Any, tmp_path: Path) -> None:
    instance = {"f0": 0.1, "f1": 0.2, "f2": 0.3, "f3": -0.7}
    fresh = reference(seed=12)["values"]  # a reference no other test used: the first call must fit
    first = why.explain("anchors", instance, reference=fresh)
    again = why.explain("anchors", instance, reference=fresh)
    assert first.data["anchor"] and all(p.startswith("f3") for p in again.data["anchor"])
    assert first.meta["fitted_from_cache"] is False and again.meta["fitted_from_cache"] is True
    png = again.chart(tmp_path / "why.png")
    assert png.startswith(b"\x89PNG") and (tmp_path / "why.png").read_bytes() == png


def test_png_over_http(why: Any, http: httpx.Client, admin_headers: dict[str, str]) -> None:
    body = {"method": "kernel_shap", "instances": rows(1, seed=6), "reference": reference()}
    reply = http.post(EXPLAIN, json=body, headers={**admin_headers, "accept": "image/png"})
    assert reply.status_code == 200, reply.text
    assert reply.headers["content-type"] == "image/png" and reply.content.startswith(b"\x89PNG")


@pytest.mark.parametrize(
    ("body", "status", "needle"),
    [
        ({"method": "lime", "instances": [{"f0": 1}]}, 422, "use one of anchors"),
        ({"method": "anchors", "instances": [{"f0": 1.0, "f3": 2.0}], "reference": reference()}, 422, "missing"),
        ({"method": "anchors", "instances": rows(1, 7), "reference": reference(5)}, 422, "at least 10"),
        ({"method": "anchors", "reference": reference()}, 422, "instances"),
        ({"method": "permutation", "instances": rows(5, 8)}, 422, "labels"),
        ({"method": "ale", "reference": {"rows": []}}, 422, '{"values"'),
        ({"method": "anchors", "instances": rows(1, 9), "params": {"treshold": 0.9}}, 422, "Allowed params"),
        ({"method": "kernel_shap", "instances": rows(1, 9), "params": {"variant": "nope"}}, 422, "variant"),
        ({"method": "kernel_shap", "instances": rows(1, 9), "params": {"output": "nope"}}, 422, "label"),
    ],
)
def test_bad_requests_are_4xx_with_a_reason(
    why: Any, http: httpx.Client, admin_headers: dict[str, str], body: dict[str, Any], status: int, needle: str
) -> None:
    reply = http.post(EXPLAIN, json=body, headers=admin_headers)
    assert reply.status_code == status, reply.text
    assert needle in reply.json()["error"]


def test_undeployed_and_unknown_pipelines_and_bad_json(
    why: Any, admin: Any, http: httpx.Client, admin_headers: dict[str, str]
) -> None:
    admin.pipeline(
        "never-deployed", {"steps": [{"name": "p", "python": "pipelines.builtin:Select", "config": {"columns": ["a"]}}]}
    )
    body = {"method": "ale", "reference": reference()}
    reply = http.post("/api/v1/workspaces/default/pipelines/never-deployed/explain", json=body, headers=admin_headers)
    assert reply.status_code == 409 and "not deployed" in reply.json()["error"]
    reply = http.post("/api/v1/workspaces/default/pipelines/ghost/explain", json=body, headers=admin_headers)
    assert reply.status_code == 404
    reply = http.post(EXPLAIN, content=b"{not json", headers=admin_headers)
    assert reply.status_code == 400
    assert http.post(EXPLAIN, json=body).status_code == 401


def test_viewers_may_explain(why: Any, admin: Any, http: httpx.Client) -> None:
    viewer = {"authorization": f"Bearer {admin.create_token('viewer')}"}
    body = {"method": "pd", "reference": reference(20), "params": {"features": ["f3"], "grid_resolution": 3}}
    reply = http.post(EXPLAIN, json=body, headers=viewer)
    assert reply.status_code == 200, reply.text
    assert reply.json()["data"]["feature_names"] == ["f3"]


def test_time_budget_gives_503(why: Any, http: httpx.Client, admin_headers: dict[str, str]) -> None:
    body = {
        "method": "kernel_shap",
        "reference": reference(),
        "params": {"timeout_s": 0.05, "sample_size": 200, "nsamples": 5000},
    }
    reply = http.post(EXPLAIN, json=body, headers=admin_headers)
    assert reply.status_code == 503, reply.text
    assert "timeout_s" in reply.json()["error"]


def test_a_running_explanation_reports_progress(why: Any, http: httpx.Client, admin_headers: dict[str, str]) -> None:
    import threading

    body = {
        "method": "kernel_shap",
        "reference": reference(seed=13),
        "params": {"timeout_s": 8, "sample_size": 400, "nsamples": 2000},
    }
    replies: list[httpx.Response] = []
    worker = threading.Thread(target=lambda: replies.append(http.post(EXPLAIN, json=body, headers=admin_headers)))
    worker.start()
    seen: list[dict[str, Any]] = []
    while worker.is_alive():
        running = http.get(f"{EXPLAIN}/progress", headers=admin_headers).json()
        seen.extend(running)
        time.sleep(0.3)
    worker.join()
    assert replies and replies[0].status_code in (200, 503), replies[0].text
    calls = [job["predict_calls"] for job in seen if job["method"] == "kernel_shap"]
    assert calls, "no progress report while the explanation ran"
    assert calls[-1] > calls[0] and seen[-1]["budget_s"] == 8
    assert {"job_id", "stage", "elapsed_s", "rows_predicted"} <= set(seen[-1])


def test_explainer_scales_to_zero_and_back(why: Any, http: httpx.Client, admin_headers: dict[str, str]) -> None:
    from cluster.explanations import running_replicas
    from deployments.names import explainer_app_name

    explain(http, admin_headers, {"method": "kernel_shap", "instances": rows(1, 10), "reference": reference()})
    app = explainer_app_name("default", "why")
    assert running_replicas(app) == 1
    deadline = time.monotonic() + 120
    while running_replicas(app) > 0 and time.monotonic() < deadline:
        time.sleep(1)
    assert running_replicas(app) == 0, "the idle explainer did not scale to zero"
    assert http.get(f"{EXPLAIN}/progress", headers=admin_headers).json() == []  # asking does not wake it
    assert running_replicas(app) == 0
    result = explain(http, admin_headers, {"method": "kernel_shap", "instances": rows(1, 11), "reference": reference()})
    assert result["data"]["importances"][0]["feature"] == "f3"
    assert running_replicas(app) == 1
