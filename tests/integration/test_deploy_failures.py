"""Deploys that go wrong, on a real cluster.

Step code that cannot load is the user's to fix: a 422 naming the step and its error, with nothing
left half-deployed (a new pipeline is not running; an upgrade leaves the old version serving). A
change made while Serve replaces a crashed replica waits for the replacement instead of failing.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from deployments.names import app_name, step_deployment_name
from tests.integration.faults import kill, replica_pids, wait_replaced
from tests.integration.helpers import upload_code

pytestmark = pytest.mark.integration
RECORDS = {"content-type": "application/json; format=pandas-records"}
API = "/api/v1/workspaces/default/pipelines"

LOAD_FAILS = """
class NeedsVocabulary:
    def __init__(self, config):
        raise FileNotFoundError("vocab.txt is not in the step's code archive")

    def __call__(self, table):
        return table
"""
LOAD_ERROR = "step 'feature' could not load: FileNotFoundError: vocab.txt is not in the step's code archive"


@pytest.fixture(scope="module")
def failing_code(admin: Any, tmp_path_factory: pytest.TempPathFactory) -> str:
    return upload_code(admin, "load-fails", "load_fails", LOAD_FAILS, Path(tmp_path_factory.mktemp("load-fails")))


def _spec(step: dict[str, Any]) -> dict[str, Any]:
    return {
        "steps": [{"name": "feature", "resources": {"num_cpus": 0.1}, **step}],
        "router": {"num_cpus": 0.1, "autoscaling": {"min_replicas": 1, "max_replicas": 1}},
    }


def _failing(code: str, placement: str) -> dict[str, Any]:
    return _spec({"python": "load_fails:NeedsVocabulary", "code": code, "placement": placement})


GOOD = _spec({"python": "pipelines.builtin:Select", "config": {"columns": ["x"]}})


def _deploy(http: httpx.Client, headers: dict[str, str], name: str, spec: dict[str, Any]) -> httpx.Response:
    put = http.put(f"{API}/{name}", json=spec, headers=headers)
    assert put.status_code in (200, 201), put.text
    return http.post(f"{API}/{name}/deploy", json={}, headers=headers, timeout=600)


def _infer(http: httpx.Client, headers: dict[str, str], name: str) -> httpx.Response:
    return http.post(f"/ws/default/v2/models/{name}/infer", json=[{"x": 2.0}], headers={**headers, **RECORDS})


@pytest.mark.parametrize("placement", ["inline", "own"])
def test_a_step_that_cannot_load_is_a_422_naming_its_error_and_leaves_nothing_running(
    http: httpx.Client, admin_headers: dict[str, str], failing_code: str, placement: str
) -> None:
    from ray import serve

    name = f"load-fails-{placement}"
    reply = _deploy(http, admin_headers, name, _failing(failing_code, placement))
    assert reply.status_code == 422, reply.text
    assert reply.json()["error"].startswith(LOAD_ERROR), reply.json()["error"]
    assert app_name("default", name) not in serve.status().applications
    assert http.get(f"{API}/{name}", headers=admin_headers).json()["status"] == "undeployed"
    assert _infer(http, admin_headers, name).status_code == 404


def test_an_upgrade_whose_step_cannot_load_is_a_422_and_the_old_version_keeps_serving(
    http: httpx.Client, admin_headers: dict[str, str], failing_code: str
) -> None:
    name = "load-fails-upgrade"
    try:
        assert _deploy(http, admin_headers, name, GOOD).status_code == 200
        reply = _deploy(http, admin_headers, name, _failing(failing_code, "inline"))
        assert reply.status_code == 422, reply.text
        assert reply.json()["error"].startswith(LOAD_ERROR), reply.json()["error"]
        status = http.get(f"{API}/{name}", headers=admin_headers).json()
        assert (status["status"], status["version"]) == ("running", 1), status
        served = _infer(http, admin_headers, name)
        assert served.status_code == 200 and served.json() == [{"x": 2.0}], served.text
    finally:
        http.post(f"{API}/{name}/undeploy", headers=admin_headers)


@pytest.fixture(scope="module")
def crashed(admin: Any) -> Iterator[Any]:
    spec = _spec({"python": "pipelines.builtin:Select", "config": {"columns": ["x"]}, "placement": "own"})
    pipeline = admin.pipeline("crash-then-change", spec)
    pipeline.deploy()
    yield pipeline
    pipeline.undeploy()


def test_a_traffic_change_made_while_a_crashed_replica_is_replaced_waits_for_it(crashed: Any) -> None:
    from cluster.deployer import app_status

    app = app_name("default", "crash-then-change")
    find = lambda: replica_pids(app, step_deployment_name("main", "feature"))  # noqa: E731
    old = find()
    kill(old[0])
    deadline = time.monotonic() + 30
    while (status := app_status(app)) is None or status["status"] != "UNHEALTHY":  # Serve noticed the crash
        assert time.monotonic() < deadline, f"Serve never reported the crash: {status}"
        time.sleep(0.05)
    changed = crashed.set_traffic({"main": 1})
    assert changed["status"] == "running", changed
    wait_replaced(find, old[0], 1)
    assert crashed.status()["status"] == "running"


def _two_gpus() -> dict[str, Any]:
    spec = _spec({"python": "pipelines.builtin:Select", "config": {"columns": ["x"]}, "placement": "own"})
    spec["steps"][0]["resources"] = {"num_cpus": 0.1, "num_gpus": 2}  # the session's cluster has one logical GPU
    return spec


NO_AUTOSCALER = "it needs 2 GPUs; the cluster has 1 GPU, and no autoscaler runs that could add a node. Add a node"


def test_without_an_autoscaler_a_pipeline_the_cluster_cannot_place_is_a_503_at_once(
    http: httpx.Client, admin_headers: dict[str, str]
) -> None:
    from ray import serve

    name = "needs-two-gpus"
    assert http.put(f"{API}/{name}", json=_two_gpus(), headers=admin_headers).status_code in (200, 201)
    started = time.monotonic()
    reply = http.post(f"{API}/{name}/deploy", json={}, headers=admin_headers)  # no deadline, as a new user sends it
    took = time.monotonic() - started
    print(f"FAULT deploy of a 2-GPU step on a 1-GPU cluster, no autoscaler: {reply.status_code} after {took:.2f} s")
    assert reply.status_code == 503, reply.text
    assert reply.headers["retry-after"] == "10"
    assert reply.json()["error"].startswith(f"pipeline '{name}' cannot start: {NO_AUTOSCALER}"), reply.json()["error"]
    assert took < 2, f"the 503 came after {took:.2f} s"  # the bound: it used to wait the whole deadline
    assert app_name("default", name) not in serve.status().applications  # nothing submitted
    assert http.get(f"{API}/{name}", headers=admin_headers).json()["status"] == "undeployed"


def test_an_upgrade_the_cluster_cannot_place_is_a_503_at_once_and_the_old_version_keeps_serving(
    http: httpx.Client, admin_headers: dict[str, str]
) -> None:
    name = "grows-to-two-gpus"
    try:
        assert _deploy(http, admin_headers, name, GOOD).status_code == 200
        assert http.put(f"{API}/{name}", json=_two_gpus(), headers=admin_headers).status_code == 201
        started = time.monotonic()
        reply = http.post(f"{API}/{name}/deploy", json={}, headers=admin_headers)
        took = time.monotonic() - started
        print(f"FAULT upgrade to a 2-GPU step, 1-GPU cluster, no autoscaler: {reply.status_code} after {took:.2f} s")
        assert reply.status_code == 503, reply.text
        assert NO_AUTOSCALER in reply.json()["error"], reply.json()["error"]
        assert took < 2, f"the 503 came after {took:.2f} s"
        status = http.get(f"{API}/{name}", headers=admin_headers).json()
        assert (status["status"], status["version"]) == ("running", 1), status
        served = _infer(http, admin_headers, name)
        assert served.status_code == 200 and served.json() == [{"x": 2.0}], served.text
    finally:
        http.post(f"{API}/{name}/undeploy", headers=admin_headers)


@pytest.fixture
def gpu_autoscaler() -> Iterator[None]:
    """The cluster config an autoscaler that can add GPU nodes publishes in the GCS (as Ray's
    autoscaler v2 does from Ray 2.61 on; deployments.ray_private.autoscaler reads it)."""
    from ray._raylet import GCS_AUTOSCALER_CLUSTER_CONFIG_KEY, GCS_AUTOSCALER_STATE_NAMESPACE
    from ray.core.generated import autoscaler_pb2
    from ray.experimental.internal_kv import _internal_kv_del, _internal_kv_put

    config = autoscaler_pb2.ClusterConfig()
    group = config.node_group_configs.add(name="gpu", min_count=0, max_count=4)
    group.resources["GPU"] = 1
    group.resources["CPU"] = 4
    key, namespace = GCS_AUTOSCALER_CLUSTER_CONFIG_KEY, GCS_AUTOSCALER_STATE_NAMESPACE
    _internal_kv_put(key, config.SerializeToString(), namespace=namespace)
    yield
    _internal_kv_del(key, namespace=namespace)


def test_with_an_autoscaler_that_can_add_the_node_the_deploy_waits_its_deadline_then_says_what_it_lacks(
    http: httpx.Client, admin_headers: dict[str, str], gpu_autoscaler: None
) -> None:
    from ray import serve

    name = "waits-for-two-gpus"
    assert http.put(f"{API}/{name}", json=_two_gpus(), headers=admin_headers).status_code in (200, 201)
    started = time.monotonic()
    reply = http.post(f"{API}/{name}/deploy", json={}, headers={**admin_headers, "x-corral-timeout-ms": "8000"})
    took = time.monotonic() - started
    print(f"FAULT deploy of a 2-GPU step with an autoscaler that can add GPU nodes: 503 after {took:.1f} s")
    assert reply.status_code == 503, reply.text  # it used to wait in serve.run for as long as the client did
    assert reply.headers["retry-after"] == "10"
    assert reply.json()["error"].startswith(
        f"pipeline '{name}' did not start within 8 s: it needs 2 GPUs; the cluster has 1 GPU. Add a node"
    ), reply.json()["error"]
    assert took < 60, f"the deploy answered only after {took:.0f} s"
    assert app_name("default", name) not in serve.status().applications  # nothing left half-deployed
    assert http.get(f"{API}/{name}", headers=admin_headers).json()["status"] == "undeployed"


def test_a_bad_deploy_deadline_is_a_400_saying_how_to_send_one(
    http: httpx.Client, admin_headers: dict[str, str]
) -> None:
    assert http.put(f"{API}/deadline-check", json=GOOD, headers=admin_headers).status_code in (200, 201)
    reply = http.post(f"{API}/deadline-check/deploy", json={}, headers={**admin_headers, "x-corral-timeout-ms": "soon"})
    assert reply.status_code == 400, reply.text
    assert "X-Corral-Timeout-Ms must be a whole number of milliseconds" in reply.json()["error"]
    longer = {**admin_headers, "x-corral-timeout-ms": "600001"}  # more than the proxy keeps a connection
    reply = http.post(f"{API}/deadline-check/deploy", json={}, headers=longer)
    assert reply.status_code == 400, reply.text
    assert reply.json()["error"].startswith("a deploy waits at most 600 s (X-Corral-Timeout-Ms: 600000)")
