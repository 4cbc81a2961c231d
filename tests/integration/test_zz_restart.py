"""Runs last: `corral down` then `corral up` brings deployed pipelines back (the store is the truth)."""

from __future__ import annotations

import os
import re
import subprocess
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from examples.fraud import FEATURES
from tests.integration.faults import Load
from tests.integration.helpers import fan_out, model_step, scale_model, upload

pytestmark = [pytest.mark.integration, pytest.mark.slow]
RECORDS = {"content-type": "application/json; format=pandas-records"}


def test_pipeline_comes_back_deployed_after_restart(corral, fraud_pipeline, admin, http, admin_headers) -> None:
    import ray

    from cluster import lifecycle

    admin.pipeline("fraud").set_traffic({"main": 3})  # live traffic, not the spec's: must survive too
    before = admin.pipeline("fraud").status()
    assert before["traffic"]["weights"] == {"main": 3.0}
    assert before["status"] == "running"
    again = lifecycle.up(corral, say=print)
    assert again.already_running  # `corral up` on a running Corral is a no-op that says so
    since = datetime.now(UTC) - timedelta(hours=1)
    logged_before = admin.pipeline("fraud").logs(start=since, limit=1_000_000)
    # Replies returned just before `down` are still in routers' log buffers: down must flush them.
    sent = [_infer(http, admin_headers) for _ in range(100)]
    lifecycle.down(corral, say=print)
    # A Ray call in this process after down (a Serve handle's metrics thread makes them) must not
    # reconnect to the head being stopped, nor start a local cluster that then holds port 8265.
    with pytest.raises(ray.exceptions.RaySystemError, match="not been started"):
        ray.put(1)
    assert not ray.is_initialized()
    result = lifecycle.up(corral, say=print)
    assert not result.already_running
    restored = {(r["workspace"], r["name"]): r["status"] for r in result.restored}
    assert restored[("default", "fraud")] == "running"
    after = admin.pipeline("fraud").status()
    assert after["status"] == "running" and after["version"] == before["version"]
    assert after["traffic"] == before["traffic"]
    _infer(http, admin_headers)
    logged_after = admin.pipeline("fraud").logs(start=since, limit=1_000_000)
    assert set(sent) <= set(logged_after.request_id), "rows answered before `corral down` were lost"
    assert set(logged_before.get("request_id", [])) <= set(logged_after.request_id)


def _infer(http: Any, admin_headers: dict[str, str]) -> str:
    reply = http.post(
        "/ws/default/v2/models/fraud/infer",
        json=[{c: 1.0 for c in FEATURES}],
        headers={**admin_headers, "content-type": "application/json; format=pandas-records"},
    )
    assert reply.status_code == 200, reply.text
    return str(reply.headers["x-corral-request-id"])


def fleet_specs(tmp: Path, admin: Any) -> dict[str, dict[str, Any]]:
    """Nine pipelines besides `fraud`: an A/B pair with a shadow, one to hot-swap, one with a GPU
    step, six plain ones; each router and step as cheap as placement allows."""
    one, two = upload(admin, "fleet-one", scale_model(1.0), tmp), upload(admin, "fleet-two", scale_model(2.0), tmp)
    router = {"num_cpus": 0.05, "autoscaling": {"min_replicas": 1, "max_replicas": 1}}
    plain = {"steps": [model_step(one)], "router": router}
    specs: dict[str, dict[str, Any]] = {f"fleet-{i}": plain for i in range(6)}
    specs["fleet-ab"] = {
        "variants": {"a": {"steps": [model_step(one)]}, "b": {"steps": [model_step(two)]}},
        "traffic": {"weights": {"a": 1}, "shadows": ["b"]},
        "router": router,
    }
    specs["fleet-swap"] = plain
    gpu_step = {**model_step(one), "resources": {"num_cpus": 0.1, "num_gpus": 1}}
    specs["fleet-gpu"] = {"steps": [gpu_step], "router": router}
    return specs


def test_ten_pipelines_stop_within_30_s_and_a_crash_restores_them_with_an_unplaceable_one_pending(
    corral: Any, fraud_pipeline: Any, admin: Any, http: Any, admin_headers: dict[str, str], tmp_path: Path
) -> None:
    import ray

    from cluster import lifecycle

    specs = fleet_specs(tmp_path, admin)
    fan_out(lambda item: admin.pipeline(item[0], item[1]).deploy(), list(specs.items()), workers=3)
    two = upload(admin, "fleet-two", scale_model(2.0), tmp_path)
    admin.pipeline("fleet-swap").swap_model("model", two)
    swapped_version = admin.pipeline("fleet-swap").status()["version"]
    admin.pipeline("fraud").explain("kernel_shap", [{c: 1.0 for c in FEATURES}], nsamples=20)  # an explainer app
    assert _infer_scaled(http, admin_headers, "fleet-gpu") == 1.0

    lines: list[str] = []
    started = time.monotonic()
    lifecycle.down(corral, say=lines.append)
    took = time.monotonic() - started
    print(f"FAULT corral down with 10 pipelines and an explainer: {took:.1f} s")
    assert took <= 30, f"`corral down` with 10 pipelines took {took:.0f} s: {lines}"
    stopping = [int(m.group(1)) for line in lines if (m := re.search(r"stopping (\d+) pipeline application", line))]
    assert stopping and stopping[0] >= 11, lines  # 10 pipelines + the explainer (+ what earlier modules left)

    lifecycle.up(corral, say=print)
    with Load(
        corral.base_url, "/ws/default/v2/models/fleet-0/infer", b'[{"x": 1.0}]', {**admin_headers, **RECORDS}
    ) as load:
        load.wait_ok(100)
        subprocess.run([lifecycle._ray_bin(), "stop", "--force"], capture_output=True, timeout=120, check=True)
    assert load.replied(), "no traffic before the crash"
    ray.shutdown()  # this driver's connection died with the cluster

    no_gpu = corral.model_copy(update={"num_gpus": 0})  # the GPU worker is gone
    started = time.monotonic()
    result = lifecycle.up(no_gpu, say=print)
    took = time.monotonic() - started
    print(f"FAULT corral up after ray stop --force: {took:.1f} s")
    assert took < float(os.environ["CORRAL_DEPLOY_TIMEOUT_S"]), f"`corral up` waited {took:.0f} s"
    rows = {r["name"]: r for r in result.restored if r["workspace"] == "default"}
    assert {"fraud", *specs} <= set(rows), rows  # (with what earlier modules left deployed)
    assert rows["fleet-gpu"]["status"] == "pending", rows["fleet-gpu"]
    assert rows["fleet-gpu"]["reason"] == "needs 1 GPU; the cluster has 0 GPUs"
    others = [r for r in result.restored if r["name"] != "fleet-gpu"]
    assert {r["status"] for r in others} == {"running"}, others
    assert admin.pipeline("fleet-swap").status()["version"] == swapped_version
    assert admin.pipeline("fleet-ab").status()["traffic"]["shadows"] == ["b"]
    assert _infer_scaled(http, admin_headers, "fleet-swap") == 2.0
    for name in specs.keys() - {"fleet-gpu", "fleet-swap"}:
        assert _infer_scaled(http, admin_headers, name) == 1.0

    status = admin.pipeline("fleet-gpu").status()
    assert (status["status"], status["reason"]) == ("pending", "needs 1 GPU; the cluster has 0 GPUs")
    reply = http.post("/ws/default/v2/models/fleet-gpu/infer", json=[{"x": 1.0}], headers={**admin_headers, **RECORDS})
    assert reply.status_code == 503, reply.text
    assert reply.headers["retry-after"] == "10"
    assert "pending: needs 1 GPU; the cluster has 0 GPUs" in reply.json()["error"]
    # Its demand is where an autoscaler looks: a placement group of its startup bundles, unplaced.
    assert _demand("fleet-gpu") == [("PENDING", [{"CPU": 0.05}, {"CPU": 0.1, "GPU": 1.0}])], _demand("fleet-gpu")

    # A GPU node joins: the pending pipeline starts by itself.
    address = ray.get_runtime_context().gcs_address
    joined = subprocess.run(
        [lifecycle._ray_bin(), "start", f"--address={address}", "--num-cpus=1", "--num-gpus=1", *_own_ports()],
        capture_output=True, text=True, timeout=120, env=dict(os.environ, **lifecycle.RAY_PROCESS_ENV),
    )  # fmt: skip
    assert joined.returncode == 0, joined.stderr
    joined_at = time.monotonic()
    deadline = joined_at + 180
    while admin.pipeline("fleet-gpu").status()["status"] != "running":
        assert time.monotonic() < deadline, admin.pipeline("fleet-gpu").status()
        time.sleep(2)
    assert _infer_scaled(http, admin_headers, "fleet-gpu") == 1.0
    print(f"FAULT pending GPU pipeline running {time.monotonic() - joined_at:.1f} s after a GPU node joined")
    assert _demand("fleet-gpu") == [], "its placement group must go before it deploys, or it holds the GPU"


def _demand(name: str) -> list[tuple[str, list[dict[str, float]]]]:
    """The state and bundles of the placement groups asking Ray for a pending pipeline (not removed)."""
    from ray.util import placement_group_table

    groups = placement_group_table().values()
    return [
        (g["state"], list(g["bundles"].values()))
        for g in groups
        if g["name"] == f"corral-pending:default--{name}" and g["state"] != "REMOVED"
    ]


def _infer_scaled(http: Any, admin_headers: dict[str, str], name: str) -> float:
    reply = http.post(f"/ws/default/v2/models/{name}/infer", json=[{"x": 1.0}], headers={**admin_headers, **RECORDS})
    assert reply.status_code == 200, (name, reply.text)
    return float(reply.json()[0]["y"])


def _own_ports() -> list[str]:
    """Free ports for a second node's agents on this machine (the head holds the defaults)."""
    import socket

    options = ["--metrics-export-port", "--dashboard-agent-listen-port", "--dashboard-agent-grpc-port",
               "--runtime-env-agent-port"]  # fmt: skip
    ports = []
    for option in options:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            ports.append(f"{option}={probe.getsockname()[1]}")
    return ports
