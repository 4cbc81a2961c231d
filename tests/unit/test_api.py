"""The control API built around a ControlService, driven by FastAPI's TestClient: no Ray, no server.

Only endpoints that stop at the registry are here (workspaces, tokens, audit, uploads, specs), and the
audit rows of the others with a stand-in deployer; what deploys runs in tests/integration on a real cluster.
"""

from __future__ import annotations

import asyncio
import string
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi import FastAPI
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient
from sklearn.linear_model import LogisticRegression
from starlette.middleware.base import BaseHTTPMiddleware

from cluster.api import API, build_api
from cluster.audit import AUDITED_METHODS, ROUTES, AuditLog
from cluster.auth import Principal, Role, hash_token, new_token
from cluster.convert import to_onnx
from cluster.service import ControlService
from cluster.settings import CorralSettings


@pytest.fixture
def admin_token() -> str:
    return new_token()


@pytest.fixture
def client(tmp_path: Path, admin_token: str) -> Iterator[TestClient]:
    settings = CorralSettings(home=tmp_path / "home", max_json_bytes=2048, max_payload_bytes=4096)
    with TestClient(build_api(ControlService(settings, hash_token(admin_token)))) as client:
        yield client


def bearer(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


def test_a_request_without_a_token_is_a_401_saying_how_to_send_one(client: TestClient) -> None:
    reply = client.get("/api/v1/workspaces")
    assert reply.status_code == 401, reply.text
    assert "Bearer" in reply.json()["error"]


def test_workspaces_and_tokens_round_trip_and_every_change_is_audited(client: TestClient, admin_token: str) -> None:
    assert client.post("/api/v1/workspaces", json={"name": "team-a"}, headers=bearer(admin_token)).status_code == 201
    created = client.post("/api/v1/workspaces/team-a/tokens", json={"role": "viewer"}, headers=bearer(admin_token))
    assert created.status_code == 201, created.text
    viewer = created.json()["token"]
    listed = client.get("/api/v1/workspaces", headers=bearer(viewer)).json()
    assert listed == [{"name": "team-a"}]
    refused = client.post("/api/v1/workspaces/team-a/tokens", json={"role": "owner"}, headers=bearer(viewer))
    assert refused.status_code == 403, refused.text

    audit = client.get("/api/v1/workspaces/team-a/audit", headers=bearer(admin_token)).json()
    tokens = "/api/v1/workspaces/team-a/tokens"
    fields = ("action", "target", "status", "role", "method", "path")
    assert [tuple(row[f] for f in fields) for row in audit] == [
        ("token.create", "", 403, "viewer", "POST", tokens),  # newest first; refused before it made a token
        ("token.create", created.json()["id"], 201, "admin", "POST", tokens),
        ("workspace.create", "team-a", 201, "admin", "POST", "/api/v1/workspaces"),  # filed under the new workspace
    ]
    assert audit[0]["token_id"] == created.json()["id"] and audit[1]["token_id"] is not None


def test_a_spec_body_over_the_json_limit_is_a_413_naming_the_setting(client: TestClient, admin_token: str) -> None:
    spec = {"steps": [{"name": "pre", "python": "pipelines.builtin:Select", "config": {"columns": ["x" * 4000]}}]}
    reply = client.put("/api/v1/workspaces/default/pipelines/big", json=spec, headers=bearer(admin_token))
    assert reply.status_code == 413, reply.text
    assert "CORRAL_MAX_JSON_BYTES" in reply.json()["error"]


def test_an_upload_over_the_payload_limit_is_a_413_naming_the_setting(client: TestClient, admin_token: str) -> None:
    files = {"file": ("model.onnx", b"\0" * 5000, "application/octet-stream")}
    reply = client.post(
        "/api/v1/workspaces/default/models", data={"name": "m"}, files=files, headers=bearer(admin_token)
    )
    assert reply.status_code == 413, reply.text
    assert "CORRAL_MAX_PAYLOAD_BYTES" in reply.json()["error"]


def test_two_apps_on_two_services_keep_their_own_state(tmp_path: Path, admin_token: str) -> None:
    apps = []
    for name in ("one", "two"):
        settings = CorralSettings(home=tmp_path / name)
        apps.append(TestClient(build_api(ControlService(settings, hash_token(admin_token)))))
    apps[0].post("/api/v1/workspaces", json={"name": "only-in-one"}, headers=bearer(admin_token))
    names = [{w["name"] for w in app.get("/api/v1/workspaces", headers=bearer(admin_token)).json()} for app in apps]
    assert "only-in-one" in names[0] and "only-in-one" not in names[1], names


# --- the audit log ------------------------------------------------------------------------------------
ADMIN = Principal(Role.admin, None)
SPEC = {"steps": [{"name": "pre", "python": "pipelines.builtin:Select", "config": {"columns": ["a"]}}]}


def audit_of(client: TestClient, token: str, workspace: str = "default") -> list[tuple[Any, ...]]:
    """(action, target, status, method, path) of the workspace's audit rows, oldest first."""
    rows = client.get(f"{API}/workspaces/{workspace}/audit", headers=bearer(token)).json()
    return [(r["action"], r["target"], r["status"], r["method"], r["path"]) for r in reversed(rows)]


def service_of(client: TestClient) -> ControlService:
    return client.app.state.service  # type: ignore[attr-defined,no-any-return]


class StandInDeployer:
    """What the routes that deploy need of the Deployer, without Ray: each call is remembered."""

    def __init__(self, fail: Exception | None = None) -> None:
        self.fail = fail
        self.calls: list[str] = []

    async def deploy(self, workspace: str, name: str, pv: Any, traffic: Any = None, timeout_s: Any = None) -> dict:
        self.calls.append(f"deploy {workspace}/{name}:{pv.version}")
        if self.fail is not None:
            raise self.fail
        return {"name": name, "version": pv.version, "status": "running"}

    async def undeploy(self, workspace: str, name: str) -> None:
        self.calls.append(f"undeploy {workspace}/{name}")


@pytest.fixture
def deployer(client: TestClient, monkeypatch: pytest.MonkeyPatch) -> StandInDeployer:
    svc = service_of(client)
    stand_in = StandInDeployer()
    monkeypatch.setattr(svc.deployer, "deploy", stand_in.deploy)
    monkeypatch.setattr(svc.deployer, "undeploy", stand_in.undeploy)

    async def no_explainer(workspace: str, name: str) -> None:
        return None

    monkeypatch.setattr(svc.explanations, "remove", no_explainer)
    return stand_in


def test_every_change_reads_as_an_action_on_a_named_target(
    client: TestClient, admin_token: str, deployer: StandInDeployer
) -> None:
    admin = bearer(admin_token)
    x = np.random.default_rng(0).normal(size=(50, 3)).astype(np.float32)
    model = to_onnx(LogisticRegression().fit(x, x[:, 0] > 0), n_features=3)
    files = {"file": ("m.onnx", model, "application/octet-stream")}
    ws = f"{API}/workspaces/default"
    assert client.post(f"{ws}/models", data={"name": "m"}, files=files, headers=admin).status_code == 201
    code = {"file": ("steps.py", b"class Step:\n    pass\n", "text/x-python")}
    assert client.post(f"{ws}/code", data={"name": "steps"}, files=code, headers=admin).status_code == 201
    assert client.put(f"{ws}/pipelines/p", json=SPEC, headers=admin).status_code == 201
    assert client.put(f"{ws}/pipelines/p", json=SPEC, headers=admin).status_code == 200
    deployed = client.post(f"{ws}/pipelines/p/deploy", headers=admin)
    assert deployed.status_code == 200, deployed.text
    assert client.post(f"{ws}/pipelines/p/undeploy", headers=admin).status_code == 200
    csv = {**admin, "content-type": "text/csv"}
    assert client.put(f"{ws}/datasets/ref", content=b"a\n1\n2\n", headers=csv).status_code == 201
    token = client.post(f"{ws}/tokens", json={"role": "viewer"}, headers=admin).json()["id"]
    assert client.delete(f"{ws}/tokens/{token}", headers=admin).status_code == 204
    assert deployer.calls == ["deploy default/p:1", "undeploy default/p"]

    assert audit_of(client, admin_token) == [
        ("model.upload", "m", 201, "POST", f"{ws}/models"),
        ("code.upload", "steps", 201, "POST", f"{ws}/code"),
        ("pipeline.apply", "p", 201, "PUT", f"{ws}/pipelines/p"),
        ("pipeline.apply", "p", 200, "PUT", f"{ws}/pipelines/p"),
        ("pipeline.deploy", "p", 200, "POST", f"{ws}/pipelines/p/deploy"),
        ("pipeline.undeploy", "p", 200, "POST", f"{ws}/pipelines/p/undeploy"),
        ("dataset.upload", "ref", 201, "PUT", f"{ws}/datasets/ref"),
        ("token.create", token, 201, "POST", f"{ws}/tokens"),
        ("token.revoke", token, 204, "DELETE", f"{ws}/tokens/{token}"),
    ]


def test_a_refused_request_is_audited_with_the_status_it_got(
    client: TestClient, admin_token: str, tmp_path: Path
) -> None:
    admin = bearer(admin_token)
    ws = f"{API}/workspaces/default"
    assert client.post(f"{ws}/pipelines/nope/deploy", headers=admin).status_code == 404
    assert client.put(f"{ws}/pipelines/p", json=SPEC, headers=admin).status_code == 201
    traffic = {"weights": {"main": 100}}
    assert client.put(f"{ws}/pipelines/p/traffic", json=traffic, headers=admin).status_code == 409  # not deployed
    swap = {"model": "m:1"}
    assert client.put(f"{ws}/pipelines/p/variants/main/steps/pre/model", json=swap, headers=admin).status_code == 409
    assert client.post(f"{ws}/tokens", json={"rolle": "viewer"}, headers=admin).status_code == 422
    assert client.delete(f"{ws}/tokens/0123456789abcdef", headers=bearer("crl_wrong")).status_code == 401
    assert client.put(f"{ws}/assays/drift", json={"pipeline": "p"}, headers=admin).status_code == 422
    assert client.delete(f"{ws}/assays/drift", headers=admin).status_code == 404
    batch = {"inputs": [str(tmp_path / "in.parquet")], "output": str(tmp_path / "out")}
    assert client.post(f"{ws}/pipelines/nope/batch", json=batch, headers=admin).status_code == 404

    assert audit_of(client, admin_token) == [
        ("pipeline.deploy", "nope", 404, "POST", f"{ws}/pipelines/nope/deploy"),
        ("pipeline.apply", "p", 201, "PUT", f"{ws}/pipelines/p"),
        ("traffic.set", "p", 409, "PUT", f"{ws}/pipelines/p/traffic"),
        ("model.swap", "p/main/pre", 409, "PUT", f"{ws}/pipelines/p/variants/main/steps/pre/model"),
        ("token.create", "", 422, "POST", f"{ws}/tokens"),
        ("token.revoke", "0123456789abcdef", 401, "DELETE", f"{ws}/tokens/0123456789abcdef"),
        ("assay.apply", "drift", 422, "PUT", f"{ws}/assays/drift"),
        ("assay.delete", "drift", 404, "DELETE", f"{ws}/assays/drift"),
        ("batch.start", "nope", 404, "POST", f"{ws}/pipelines/nope/batch"),
    ]
    [unauthenticated] = [r for r in client.get(f"{ws}/audit", headers=admin).json() if r["status"] == 401]
    assert unauthenticated["token_id"] is None and unauthenticated["role"] is None  # no principal behind it


def test_an_endpoint_that_raises_is_audited_as_the_500_it_answers(
    client: TestClient, admin_token: str, deployer: StandInDeployer
) -> None:
    deployer.fail = RuntimeError("the deployer broke")
    admin = bearer(admin_token)
    assert client.put(f"{API}/workspaces/default/pipelines/p", json=SPEC, headers=admin).status_code == 201
    with TestClient(client.app, raise_server_exceptions=False) as raw:
        reply = raw.post(f"{API}/workspaces/default/pipelines/p/deploy", headers=admin)
    assert reply.status_code == 500 and "the deployer broke" in reply.json()["error"]
    [row] = client.get(f"{API}/workspaces/default/audit", headers=admin, params={"limit": 1}).json()
    assert (row["action"], row["target"], row["status"], row["role"]) == ("pipeline.deploy", "p", 500, "admin")


def test_reads_previews_and_requests_no_route_takes_leave_no_row(client: TestClient, admin_token: str) -> None:
    admin = bearer(admin_token)
    ws = f"{API}/workspaces/default"
    assert client.get(f"{ws}/pipelines", headers=admin).status_code == 200
    assert client.post(f"{ws}/assays/nope/preview", json={}, headers=admin).status_code == 404
    assert client.post(f"{ws}/no-such-thing", headers=admin).status_code == 404
    assert client.patch(f"{ws}/pipelines/p", headers=admin).status_code == 405
    assert client.post("/ws/default/v2/models/nope/infer", json={}, headers=admin).status_code == 404  # data plane
    assert audit_of(client, admin_token) == []


def test_a_client_holding_the_whole_reply_finds_its_audit_row(client: TestClient, admin_token: str) -> None:
    """The row is written before the last of the reply goes out (TestClient alone would not tell: it
    returns once the app has finished), so the app is driven by hand here."""
    svc = service_of(client)
    rows_when_done: list[list[dict[str, Any]]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b'{"name": "held"}', "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.body" and not message.get("more_body", False):
            now = datetime.now(UTC)
            rows_when_done.append(svc.registry.audit(ADMIN, "held", now - timedelta(minutes=1), now, 10))

    headers = [(b"authorization", f"Bearer {admin_token}".encode()), (b"content-type", b"application/json")]
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": f"{API}/workspaces",
        "raw_path": f"{API}/workspaces".encode(),
        "root_path": "",
        "query_string": b"",
        "headers": headers,
        "client": ("127.0.0.1", 50000),
        "server": ("testserver", 80),
    }
    asyncio.run(client.app(scope, receive, send))  # type: ignore[arg-type]
    [rows] = rows_when_done
    assert [(r["action"], r["target"], r["status"]) for r in rows] == [("workspace.create", "held", 201)]


def test_an_audit_row_that_cannot_be_written_does_not_change_the_reply(
    client: TestClient, admin_token: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*args: Any, **kwargs: Any) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(service_of(client).registry, "record_audit", broken)
    reply = client.post(f"{API}/workspaces", json={"name": "still-made"}, headers=bearer(admin_token))
    assert reply.status_code == 201 and reply.json() == {"name": "still-made"}


def mutating_routes(app: FastAPI) -> dict[tuple[str, str], APIRoute]:
    """Every (method, path template after /api/v1) of the app that may change something."""
    routes = {}
    for route in app.routes:
        if isinstance(route, APIRoute) and route.path.startswith(API + "/"):
            for method in route.methods & AUDITED_METHODS:
                routes[(method, route.path.removeprefix(API))] = route
    return routes


def test_every_mutating_route_has_an_audit_action_or_is_declared_read_only(client: TestClient) -> None:
    routes = mutating_routes(client.app)  # type: ignore[arg-type]
    missing = sorted(set(routes) - set(ROUTES))
    assert missing == [], f"name the audit action of these routes in cluster/audit.py ROUTES: {missing}"
    stale = sorted(set(ROUTES) - set(routes))
    assert stale == [], f"cluster/audit.py ROUTES names routes that do not exist: {stale}"
    for key, action in ROUTES.items():
        if action is None:
            continue
        assert action.name.count(".") == 1 and action.name.islower(), f"{key}: {action.name} is not noun.verb"
        fields = {name for _, name, _, _ in string.Formatter().parse(action.target) if name}
        assert fields <= set(routes[key].param_convertors), f"{key}: target {action.target!r} names no path parameter"
    assert {key for key, action in ROUTES.items() if action is None} == {
        ("POST", "/workspaces/{w}/pipelines/{p}/explain"),
        ("POST", "/workspaces/{w}/assays/{a}/preview"),
    }


def test_the_audit_middleware_is_pure_asgi(client: TestClient) -> None:
    classes = [m.cls for m in client.app.user_middleware]  # type: ignore[attr-defined]
    assert classes == [AuditLog]
    assert not issubclass(AuditLog, BaseHTTPMiddleware)
