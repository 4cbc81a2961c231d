"""The router scales out under CPU load that Serve's ongoing-request count does not see.

A router runs small requests start to finish on its event loop, so Serve samples next to no
requests in flight while the replica is saturated; Corral's autoscaling policy also reads the
backlog each replica reports (serving.load). Load here: 8 clients sending single rows (run on the
router's event loop, where Serve's count cannot see them), until a second replica runs or the
bound passes.
"""

from __future__ import annotations

import copy
import threading
import time
from typing import Any

import httpx
import pytest

from examples.fraud import FEATURES, make_transactions

pytestmark = [pytest.mark.integration, pytest.mark.slow]
URL = "/ws/default/v2/models/fraud-scaling/infer"
SCALE_UP_BOUND_S = 120.0


@pytest.fixture(scope="module")
def scaling(admin: Any, fraud_pipeline: dict[str, Any]) -> Any:
    spec = copy.deepcopy(fraud_pipeline["spec"])
    bounds = {"min_replicas": 1, "max_replicas": 2, "target_ongoing_requests": 2, "upscale_delay_s": 1}
    spec["router"] = {"autoscaling": bounds}
    pipeline = admin.pipeline("fraud-scaling", spec)
    pipeline.deploy()
    yield pipeline
    pipeline.undeploy()


def running_routers() -> int:
    from ray import serve

    states = serve.status().applications["default--fraud-scaling"].deployments["router"].replica_states
    return sum(n for state, n in states.items() if str(state).endswith("RUNNING"))


def test_a_backlogged_router_gets_a_second_replica_without_failing_a_request(
    scaling: Any, corral: Any, admin_headers: dict[str, str]
) -> None:
    assert running_routers() == 1
    body = make_transactions(1, seed=9)[FEATURES].to_json(orient="records").encode()
    headers = {**admin_headers, "content-type": "application/json; format=pandas-records"}
    stop = threading.Event()
    statuses: list[int] = []

    def client() -> None:
        with httpx.Client(base_url=corral.base_url, timeout=60) as http:
            while not stop.is_set():
                statuses.append(http.post(URL, content=body, headers=headers).status_code)

    threads = [threading.Thread(target=client, daemon=True) for _ in range(8)]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + SCALE_UP_BOUND_S
    try:
        while running_routers() < 2 and time.monotonic() < deadline:
            time.sleep(2)
        replicas = running_routers()
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=60)
    assert replicas == 2, f"the router did not scale out within {SCALE_UP_BOUND_S:.0f} s of load from 8 clients"
    assert statuses and set(statuses) == {200}, sorted(set(statuses))
