"""Live traffic control on a real cluster: weighted and key splits, shadows, ramps, hot-swaps, blue/green."""

from __future__ import annotations

import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from scipy.stats import chisquare

from tests.integration.helpers import SHADOW_STEPS, fan_out, model_step, scale_model, upload, upload_code

pytestmark = pytest.mark.integration
RECORDS = {"content-type": "application/json; format=pandas-records"}
URL = "/ws/default/v2/models/{}/infer"


@pytest.fixture(scope="module")
def models(admin: Any, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    tmp = Path(tmp_path_factory.mktemp("models"))
    return {
        "one": upload(admin, "times", scale_model(1.0), tmp),
        "two": upload(admin, "times", scale_model(2.0), tmp),
        "three": upload(admin, "times", scale_model(3.0), tmp),
        "wrong": upload(admin, "other", scale_model(5.0, input_name="z", width=3), tmp),
    }


@pytest.fixture(scope="module")
def ab(admin: Any, models: dict[str, str]) -> Any:
    spec = {
        "variants": {
            "control": {"steps": [model_step(models["one"])]},
            "challenger": {"steps": [model_step(models["two"])]},
        },
        "traffic": {"weights": {"control": 70, "challenger": 30}},
        "router": {"autoscaling": {"min_replicas": 1, "max_replicas": 1}},
    }
    pipeline = admin.pipeline("ab", spec)
    pipeline.deploy()
    yield pipeline
    pipeline.undeploy()


def call(http: httpx.Client, headers: dict[str, str], name: str, row: dict[str, Any], **extra: str) -> httpx.Response:
    return http.post(URL.format(name), json=[row], headers={**headers, **RECORDS, **extra})


def observed_split(http: httpx.Client, headers: dict[str, str], n: int) -> Counter[str]:
    def one(i: int) -> str:
        reply = call(http, headers, "ab", {"x": float(i)})
        assert reply.status_code == 200, reply.text
        variant = reply.headers["x-corral-variant"]
        expected = 2.0 * i if variant == "challenger" else float(i)
        assert reply.json()[0]["y"] == expected  # a [N, 1] output is one value per record
        return variant

    return Counter(fan_out(one, list(range(n))))


def assert_70_30(counts: Counter[str]) -> None:
    n = sum(counts.values())
    result = chisquare([counts["control"], counts["challenger"]], [0.7 * n, 0.3 * n])
    assert result.pvalue > 0.001, (counts, result)


def test_weighted_split_with_one_router_replica(ab: Any, http: httpx.Client, admin_headers: dict[str, str]) -> None:
    assert_70_30(observed_split(http, admin_headers, 2000))


def test_weighted_split_with_three_router_replicas(
    ab: Any, admin: Any, http: httpx.Client, admin_headers: dict[str, str]
) -> None:
    spec = ab.status()["spec"]
    spec["router"]["autoscaling"] = {"min_replicas": 3, "max_replicas": 3}  # a lightweight update
    ab.apply(spec)
    ab.deploy()
    from ray import serve

    states = serve.status().applications["default--ab"].deployments["router"].replica_states
    assert sum(n for state, n in states.items() if str(state).endswith("RUNNING")) == 3, states
    assert_70_30(observed_split(http, admin_headers, 2000))


def test_reply_names_variant_and_version_in_headers_and_v2_parameters(
    ab: Any, http: httpx.Client, admin_headers: dict[str, str]
) -> None:
    body = {"inputs": [{"name": "x", "shape": [1, 1], "datatype": "FP32", "data": [4.0]}]}
    reply = http.post(URL.format("ab"), json=body, headers=admin_headers)
    assert reply.status_code == 200, reply.text
    v2 = reply.json()
    assert v2["parameters"]["variant"] == reply.headers["x-corral-variant"]
    assert v2["model_version"] == reply.headers["x-corral-pipeline-version"] == str(ab.status()["version"])
    assert len(reply.headers["x-corral-request-id"]) == 32


def test_key_split_is_sticky(ab: Any, http: httpx.Client, admin_headers: dict[str, str]) -> None:
    ab.set_traffic({"control": 50, "challenger": 50}, key="customer")
    keys = [f"customer-{k}" for k in range(200)]

    def by_column(key: str) -> str:
        reply = call(http, admin_headers, "ab", {"x": 1.0, "customer": key})
        assert reply.status_code == 200, reply.text
        return str(reply.headers["x-corral-variant"])

    def by_header(key: str) -> str:
        reply = call(http, admin_headers, "ab", {"x": 1.0}, **{"x-corral-split-key": key})
        assert reply.status_code == 200, reply.text
        return str(reply.headers["x-corral-variant"])

    seen: dict[str, set[str]] = {}
    for key, variant in zip(keys * 4, fan_out(by_column, keys * 4), strict=True):
        seen.setdefault(key, set()).add(variant)
    for key, variant in zip(keys, fan_out(by_header, keys), strict=True):
        seen[key].add(variant)  # the header and the column hash the same way
    assert all(len(variants) == 1 for variants in seen.values())
    both = Counter(next(iter(v)) for v in seen.values())
    assert both["control"] > 50 and both["challenger"] > 50  # keys really spread over both


@pytest.mark.parametrize(
    ("traffic", "message"),
    [
        ({"weights": {"control": 50, "ghost": 50}}, "unknown variants ['ghost']"),
        ({"weights": {"control": 0, "challenger": 0}}, "all zero"),
        ({"weights": {"control": -1, "challenger": 2}}, "negative"),
        ({"weights": {"control": 1, "challenger": 1}, "shadows": ["challenger"]}, "both weighted and shadow"),
        ({"weights": {"control": 1}, "extra": True}, "extra"),
    ],
)
def test_bad_traffic_is_422_and_changes_nothing(
    ab: Any, http: httpx.Client, admin_headers: dict[str, str], traffic: dict[str, Any], message: str
) -> None:
    path = "/api/v1/workspaces/default/pipelines/ab/traffic"
    before = http.get(path, headers=admin_headers).json()
    reply = http.put(path, json=traffic, headers=admin_headers)
    assert reply.status_code == 422, reply.text
    assert message in reply.json()["error"]
    assert http.get(path, headers=admin_headers).json() == before


def test_traffic_body_that_is_not_json_is_400(http: httpx.Client, admin_headers: dict[str, str], ab: Any) -> None:
    reply = http.put("/api/v1/workspaces/default/pipelines/ab/traffic", content=b"{", headers=admin_headers)
    assert reply.status_code == 400 and "weights" in reply.json()["error"]


def test_swap_to_a_model_with_other_inputs_is_422_and_changes_nothing(
    ab: Any, http: httpx.Client, admin_headers: dict[str, str], models: dict[str, str]
) -> None:
    versions = len(ab.versions())
    before = ab.status()
    path = "/api/v1/workspaces/default/pipelines/ab/variants/challenger/steps/model/model"
    reply = http.put(path, json={"model": models["wrong"]}, headers=admin_headers)
    assert reply.status_code == 422, reply.text
    assert "inputs" in reply.json()["error"] and "x: FP32" in reply.json()["error"]
    assert len(ab.versions()) == versions and ab.status()["version"] == before["version"]
    missing = http.put(path.replace("challenger", "nobody"), json={"model": models["two"]}, headers=admin_headers)
    assert missing.status_code == 404 and "no variant 'nobody'" in missing.json()["error"]


def test_traffic_of_an_undeployed_pipeline_is_409(
    admin: Any, http: httpx.Client, admin_headers: dict[str, str], models: dict[str, str]
) -> None:
    admin.pipeline("idle", {"steps": [model_step(models["one"])]})
    reply = http.put(
        "/api/v1/workspaces/default/pipelines/idle/traffic", json={"weights": {"main": 1}}, headers=admin_headers
    )
    assert reply.status_code == 409 and "deploy it first" in reply.json()["error"]


def replica_ids(app: str, placement: str) -> dict[str, str]:
    """The replica id running each model step of `app` (one replica each in these pipelines): the
    router's for inline steps, the step deployments' own for `own` steps."""
    from ray import serve

    if placement == "inline":
        info = serve.get_app_handle(app).info.remote().result(timeout_s=60)
        assert set(info["inline_models"]) == {"control.model", "challenger.model"}
        return {"router": info["replica"]}
    return {
        name: serve.get_deployment_handle(name, app_name=app).describe.remote().result(timeout_s=60)["replica"]
        for name in ("control.model", "challenger.model")
    }


class Load:
    """Eight clients calling a pipeline until stopped; records every reply's status and value."""

    def __init__(self, http_url: str, headers: dict[str, str], name: str, clients: int = 8) -> None:
        self.url, self.headers, self.name = http_url, {**headers, **RECORDS}, name
        self.stop = threading.Event()
        self.results: list[tuple[float, int, float | None, str]] = []
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self._client, daemon=True) for _ in range(clients)]

    def _client(self) -> None:
        with httpx.Client(base_url=self.url, timeout=60) as client:
            while not self.stop.is_set():
                started = time.monotonic()  # by start time: a request in flight may finish on the old model
                try:
                    reply = client.post(URL.format(self.name), json=[{"x": 1.0}], headers=self.headers)
                    status, value = reply.status_code, reply.json()[0]["y"] if reply.status_code == 200 else None
                    variant = reply.headers.get("x-corral-variant", "")
                except httpx.HTTPError:
                    status, value, variant = 0, None, ""
                with self.lock:
                    self.results.append((started, status, value, variant))

    def __enter__(self) -> Load:
        for thread in self.threads:
            thread.start()
        time.sleep(1.0)
        return self

    def __exit__(self, *_: Any) -> None:
        time.sleep(1.0)
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=60)

    def since(self, t: float) -> list[tuple[float, int, float | None, str]]:
        with self.lock:
            return [r for r in self.results if r[0] >= t]


@pytest.mark.parametrize("placement", ["inline", "own"])
def test_ramp_swap_and_version_switch_under_load_fail_no_request(
    admin: Any, corral: Any, admin_headers: dict[str, str], models: dict[str, str], placement: str
) -> None:
    spec: dict[str, Any] = {
        "variants": {
            "control": {"steps": [{**model_step(models["one"]), "placement": placement}]},
            "challenger": {"steps": [{**model_step(models["two"]), "placement": placement}]},
        },
        "traffic": {"weights": {"control": 100, "challenger": 0}},
        "router": {"autoscaling": {"min_replicas": 1, "max_replicas": 1}},  # one replica id to follow
    }
    name = f"live-{placement}"
    pipeline = admin.pipeline(name, spec)
    pipeline.deploy()
    replicas_before = replica_ids(f"default--{name}", placement)
    try:
        with Load(corral.base_url, admin_headers, name) as load:
            for share in (10, 50, 100):
                pipeline.set_traffic({"control": 100 - share, "challenger": share})
            after_ramp = time.monotonic()
            time.sleep(1.0)
            swapped = pipeline.swap_model("model", models["three"], variant="challenger")
            after_swap = time.monotonic()
            assert swapped["model"] == models["three"]
            time.sleep(1.0)
            before_switch = time.monotonic()
            spec["variants"]["challenger"]["steps"][0]["model"] = models["one"]
            spec["traffic"] = {"weights": {"control": 0, "challenger": 1}}
            pipeline.apply(spec)
            pipeline.deploy()
            after_switch = time.monotonic()
        assert len(load.results) > 100
        failed = [r for r in load.results if r[1] != 200]
        assert not failed, f"{len(failed)} of {len(load.results)} requests failed: {failed[:5]}"
        ramp = load.since(after_ramp)
        assert {r[3] for r in ramp} == {"challenger"}
        swapped_replies = [r[2] for r in load.since(after_swap) if r[0] < before_switch]
        assert swapped_replies and set(swapped_replies) == {3.0}
        assert {r[2] for r in load.since(after_switch)} == {1.0}
        # ramp, swap and a version that changed only a model reconfigured the replicas: none restarted
        assert replica_ids(f"default--{name}", placement) == replicas_before
    finally:
        pipeline.undeploy()


@pytest.fixture(scope="module")
def shadowed(admin: Any, models: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Any:
    tmp = Path(tmp_path_factory.mktemp("shadow-code"))
    code_ref = upload_code(admin, "shadow-steps", "shadow_steps", SHADOW_STEPS, tmp)
    spec = {
        "variants": {
            "main": {"steps": [model_step(models["two"])]},
            "boom": {
                "steps": [
                    {"name": "s", "python": "shadow_steps:Boom", "code": code_ref, "resources": {"num_cpus": 0.1}}
                ]
            },
            "slow": {
                "steps": [
                    {"name": "s", "python": "shadow_steps:Slow", "code": code_ref, "resources": {"num_cpus": 0.1}}
                ]
            },
        },
        "traffic": {"weights": {"main": 1}, "shadows": ["boom", "slow"]},
        "router": {"autoscaling": {"min_replicas": 1, "max_replicas": 1}},  # its counts are the whole story
    }
    pipeline = admin.pipeline("shadowed", spec)
    pipeline.deploy()
    yield pipeline
    pipeline.undeploy()


def test_failing_and_slow_shadows_never_touch_the_primary_reply(
    shadowed: Any, http: httpx.Client, admin_headers: dict[str, str]
) -> None:
    def one(i: int) -> float:
        start = time.monotonic()
        reply = call(http, admin_headers, "shadowed", {"x": float(i)})
        assert reply.status_code == 200, reply.text
        assert reply.headers["x-corral-variant"] == "main"
        assert reply.json()[0]["y"] == 2.0 * i
        return time.monotonic() - start

    latencies = fan_out(one, list(range(200)), workers=8)
    assert float(np.percentile(latencies, 99)) < 2.0
    from ray import serve

    router = serve.get_app_handle("default--shadowed")
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        stats = router.info.remote().result(timeout_s=30)["shadows"]
        if stats.get("in_flight") == 0:
            break
        time.sleep(0.5)
    # with one router replica every request reached one of them; each went to both shadows
    assert stats.get("boom.error", 0) + stats.get("boom.dropped", 0) == 200
    assert stats.get("slow.ok", 0) >= 1 and stats.get("slow.ok", 0) + stats.get("slow.dropped", 0) == 200
