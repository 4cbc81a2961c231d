"""A step with `min_replicas: 0` scales to zero when idle. The first request afterwards waits for a
replica and is served; one whose deadline passes before any replica took it gets a 503 with
Retry-After (the step is starting: retry), not a 504."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from deployments.names import app_name, step_deployment_name
from tests.integration.faults import replica_pids
from tests.integration.helpers import model_step, scale_model, upload

pytestmark = [pytest.mark.integration, pytest.mark.slow]
RECORDS = {"content-type": "application/json; format=pandas-records"}
URL = "/ws/default/v2/models/zero/infer"
IDLE_BOUND_S = 120.0  # Serve averages load over its 30 s look-back before it scales to zero


def _wait_for_replicas(app: str, deployment: str, count: int, bound_s: float) -> float:
    started = time.monotonic()
    while len(replica_pids(app, deployment)) != count:
        assert time.monotonic() - started < bound_s, f"{deployment} did not reach {count} replicas in {bound_s} s"
        time.sleep(1)
    return time.monotonic() - started


def test_a_step_scaled_to_zero_serves_the_first_request_after_idle(
    admin: Any, http: Any, admin_headers: dict[str, str], tmp_path: Path
) -> None:
    model = upload(admin, "zero-model", scale_model(2.0), tmp_path)
    step = {
        **model_step(model),
        "placement": "own",
        "autoscaling": {"min_replicas": 0, "max_replicas": 1, "downscale_delay_s": 1},
    }
    pipeline = admin.pipeline("zero", {"steps": [step]})
    pipeline.deploy()
    app, deployment = app_name("default", "zero"), step_deployment_name("main", "model")
    headers = {**admin_headers, **RECORDS}
    try:
        idle = _wait_for_replicas(app, deployment, 0, IDLE_BOUND_S)
        print(f"AUTOSCALING step at zero replicas {idle:.0f} s after the deploy")

        hurried = http.post(URL, json=[{"x": 1.0}], headers={**headers, "x-corral-timeout-ms": "150"})
        assert hurried.status_code == 503, hurried.text
        assert hurried.headers["retry-after"] == "5"
        assert "took the request before its deadline (scaling up from zero" in hurried.json()["error"]

        started = time.monotonic()
        served = http.post(URL, json=[{"x": 1.0}], headers=headers)
        waited = time.monotonic() - started
        assert served.status_code == 200, served.text
        assert float(served.json()[0]["y"]) == 2.0
        print(f"AUTOSCALING first request after idle served in {waited:.1f} s (cold start)")
        assert len(replica_pids(app, deployment)) == 1
        warm = http.post(URL, json=[{"x": 3.0}], headers=headers)
        assert warm.status_code == 200 and float(warm.json()[0]["y"]) == 6.0

        idle = _wait_for_replicas(app, deployment, 0, IDLE_BOUND_S)  # idle again: back to zero
        print(f"AUTOSCALING step back at zero replicas {idle:.0f} s after its last request")
        started = time.monotonic()
        again = http.post(URL, json=[{"x": 4.0}], headers=headers)
        assert again.status_code == 200 and float(again.json()[0]["y"]) == 8.0, again.text
        print(f"AUTOSCALING first request after an idle spell served in {time.monotonic() - started:.1f} s")
    finally:
        pipeline.undeploy()
