"""The control API built around a ControlService, driven by FastAPI's TestClient: no Ray, no server.

Only endpoints that stop at the registry are here (workspaces, tokens, audit, uploads, specs);
what deploys runs in tests/integration on a real cluster.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from cluster.api import build_api
from cluster.auth import hash_token, new_token
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
    assert [(row["action"], row["target"], row["status"], row["role"]) for row in audit] == [
        ("POST", "tokens", 403, "viewer"),  # newest first
        ("POST", "tokens", 201, "admin"),
    ]


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
