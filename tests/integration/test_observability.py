"""Validations flag exactly the rows they should; Corral's metrics reach Ray's Prometheus endpoint."""

from __future__ import annotations

import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from tests.integration.helpers import fan_out, metric_sum, model_step, scale_model, scrape, upload

pytestmark = pytest.mark.integration
RECORDS = {"content-type": "application/json; format=pandas-records"}
# What this module sent to `scored` (the only sender): the metrics must add up to exactly this.
SENT: Counter[str] = Counter()
VALIDATIONS = {"high_risk": "out.probability > 0.9", "tiny": "in.x < 0.05 and out.probability >= 0"}


@pytest.fixture(scope="module")
def identity_model(admin: Any, tmp_path_factory: pytest.TempPathFactory) -> str:
    tmp = Path(tmp_path_factory.mktemp("scored-models"))
    return upload(admin, "identity-prob", scale_model(1.0, output_name="probability"), tmp)


@pytest.fixture(scope="module")
def scored(admin: Any, identity_model: str) -> Any:
    spec = {"steps": [model_step(identity_model)], "validations": VALIDATIONS}
    pipeline = admin.pipeline("scored", spec)
    pipeline.deploy()
    yield pipeline
    pipeline.undeploy()


def test_validation_flags_exactly_the_rows_it_should(
    scored: Any, http: httpx.Client, admin_headers: dict[str, str]
) -> None:
    since = datetime.now(UTC)
    xs = np.random.default_rng(11).uniform(0, 1, 300).round(4)
    batches = [xs[i : i + 10] for i in range(0, len(xs), 10)]  # batches of rows: flags are per row

    def send(batch: np.ndarray) -> str:
        body = [{"x": float(x)} for x in batch]
        reply = http.post("/ws/default/v2/models/scored/infer", json=body, headers={**admin_headers, **RECORDS})
        assert reply.status_code == 200, reply.text
        return str(reply.headers["x-corral-request-id"])

    fan_out(send, batches, workers=4)
    SENT["200"] += len(batches)
    SENT["rows"] += len(xs)
    deadline = time.monotonic() + 30
    while len(frame := scored.logs(start=since, limit=10_000)) < len(xs) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert len(frame) == len(xs)
    frame = frame.sort_values("in.x")
    probability = frame["out.probability"].to_numpy(np.float32)
    expected_high = probability > np.float32(0.9)
    expected_tiny = frame["in.x"].to_numpy() < 0.05
    assert expected_high.sum() > 10 and expected_tiny.sum() > 5  # both rules really have rows to flag
    assert (frame["anomaly.high_risk"].to_numpy() == expected_high).all()
    assert (frame["anomaly.tiny"].to_numpy() == expected_tiny).all()
    assert (frame["anomaly.count"].to_numpy() == expected_high.astype(int) + expected_tiny.astype(int)).all()
    SENT["high_risk"] += int(expected_high.sum())


@pytest.mark.parametrize(
    ("validations", "fragment"),
    [
        ({"broken": "out.probability >"}, "validation 'broken'"),
        ({"ghost": "out.nothing > 0.5"}, "out.nothing"),
        ({"ghost_in": "in.zzz > 1"}, "in.zzz"),
        ({"bare": "probability > 0.9"}, "in.<name> or out.<name>"),
        ({"count": "out.probability > 0.9"}, "count"),
        ({"not_bool": "out.probability + 1"}, "not_bool"),
    ],
)
def test_bad_validations_are_422_and_store_nothing(
    admin: Any, identity_model: str, http: httpx.Client, admin_headers: dict[str, str], validations: dict[str, str],
    fragment: str,
) -> None:  # fmt: skip
    spec = {"steps": [model_step(identity_model)], "validations": validations}
    reply = http.put("/api/v1/workspaces/default/pipelines/never-stored", json=spec, headers=admin_headers)
    assert reply.status_code == 422, reply.text
    assert fragment in reply.json()["error"]
    assert http.get("/api/v1/workspaces/default/pipelines/never-stored", headers=admin_headers).status_code == 404


@pytest.mark.slow
def test_prometheus_endpoint_has_corral_metrics_with_labels_and_counts(
    scored: Any, corral: Any, http: httpx.Client, admin_headers: dict[str, str]
) -> None:
    url = "/ws/default/v2/models/scored/infer"
    headers = {**admin_headers, **RECORDS}
    for _ in range(20):
        assert http.post(url, json=[{"x": 0.95}, {"x": 0.1}], headers=headers).status_code == 200
    for _ in range(3):
        assert http.post(url, json=[{"nope": 1}], headers=headers).status_code == 422
    SENT.update({"200": 20, "422": 3, "rows": 40, "high_risk": 20})
    expected = (SENT["200"], SENT["422"], SENT["high_risk"], SENT["rows"])
    deadline = time.monotonic() + 90  # Ray exports metrics every few seconds
    while True:
        text = scrape(corral.metrics_port)
        seen = (
            metric_sum(text, "corral_requests_total", pipeline="scored", status="200", variant="main"),
            metric_sum(text, "corral_requests_total", pipeline="scored", status="422"),
            metric_sum(text, "corral_validation_failures_total", pipeline="scored", validation="high_risk"),
            metric_sum(text, "corral_rows_total", pipeline="scored", workspace="default", variant="main"),
        )
        if seen == expected or time.monotonic() > deadline:
            break
        time.sleep(2)
    assert seen == expected
    assert metric_sum(text, "corral_request_latency_ms_count", pipeline="scored", variant="main") == SENT["200"]
    steps = metric_sum(text, "corral_step_latency_ms_count", pipeline="scored", variant="main", step="model")
    assert steps >= SENT["200"]
