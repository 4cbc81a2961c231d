"""Workspaces, tokens and the registry over real HTTP: the contract's 401/403/404/409/422 rules."""

from __future__ import annotations

import time

import pytest

from examples.fraud import FEATURES

pytestmark = pytest.mark.integration


def bearer(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


@pytest.fixture(scope="module")
def workspaces(admin) -> dict[str, str]:
    """Two workspaces, a viewer and an editor in `team-a`, an owner in `team-b`."""
    for name in ("team-a", "team-b"):
        admin.create_workspace(name)
    return {
        "viewer_a": admin.create_token("viewer", "team-a"),
        "editor_a": admin.create_token("editor", "team-a"),
        "owner_b": admin.create_token("owner", "team-b"),
    }


@pytest.fixture(scope="module")
def pipeline_b(corral, workspaces, fraud_pipeline, fraud_model):
    """A deployed pipeline in team-b (a one-step pipeline on the demo model)."""
    from cluster.sdk import Client

    owner_b = Client(corral.base_url, token=workspaces["owner_b"], workspace="team-b")
    owner_b.upload_model("fraud", fraud_model["model"], n_features=len(FEATURES))
    owner_b.pipeline(
        "secret",
        {"steps": [{"name": "model", "model": "fraud", "columns": FEATURES, "resources": {"num_cpus": 0.25}}]},
    ).deploy()
    return owner_b


def test_missing_and_unknown_tokens_are_401(http) -> None:
    assert http.get("/api/v1/workspaces").status_code == 401
    reply = http.get("/api/v1/workspaces", headers=bearer("crl_not-a-token"))
    assert reply.status_code == 401 and "token" in reply.json()["error"]
    assert http.post("/ws/default/v2/models/fraud/infer", content=b"[]").status_code == 401


def test_tokens_see_only_their_workspace(http, workspaces) -> None:
    reply = http.get("/api/v1/workspaces", headers=bearer(workspaces["viewer_a"]))
    assert reply.json() == [{"name": "team-a"}]


def test_viewer_cannot_deploy_or_upload(http, workspaces) -> None:
    headers = bearer(workspaces["viewer_a"])
    reply = http.put(
        "/api/v1/workspaces/team-a/pipelines/p",
        json={"steps": [{"name": "m", "model": "x"}]},
        headers=headers,
    )
    assert reply.status_code == 403 and "editor" in reply.json()["error"]
    assert http.post("/api/v1/workspaces/team-a/pipelines/p/deploy", json={}, headers=headers).status_code == 403
    reply = http.post(
        "/api/v1/workspaces/team-a/models",
        data={"name": "m"},
        files={"file": ("m.onnx", b"x")},
        headers=headers,
    )
    assert reply.status_code == 403


def test_editor_cannot_make_tokens(http, workspaces) -> None:
    reply = http.post(
        "/api/v1/workspaces/team-a/tokens", json={"role": "viewer"}, headers=bearer(workspaces["editor_a"])
    )
    assert reply.status_code == 403


def test_other_workspace_is_404_on_control_and_data_plane(http, workspaces, pipeline_b) -> None:
    headers = bearer(workspaces["editor_a"])
    assert http.get("/api/v1/workspaces/team-b/pipelines/secret", headers=headers).status_code == 404
    reply = http.post(
        "/ws/team-b/v2/models/secret/infer",
        json=[{c: 1.0 for c in FEATURES}],
        headers={**headers, "content-type": "application/json; format=pandas-records"},
    )
    assert reply.status_code == 404, reply.text
    # ... while its own owner gets an answer
    own = http.post(
        "/ws/team-b/v2/models/secret/infer",
        content=b'[{"amount":1,"age":30,"n_tx":1,"hour":3,"merchant_risk":0.1,"distance_km":2}]',
        headers={**bearer(workspaces["owner_b"]), "content-type": "application/json; format=pandas-records"},
    )
    assert own.status_code == 200, own.text


def test_duplicate_workspace_is_409(http, admin_headers, workspaces) -> None:
    reply = http.post("/api/v1/workspaces", json={"name": "team-a"}, headers=admin_headers)
    assert reply.status_code == 409 and "exists" in reply.json()["error"]


def test_invalid_onnx_upload_is_422_and_stores_nothing(http, admin_headers) -> None:
    reply = http.post(
        "/api/v1/workspaces/default/models",
        data={"name": "junk"},
        files={"file": ("junk.onnx", b"\x08\x01garbage")},
        headers=admin_headers,
    )
    assert reply.status_code == 422 and "ONNX" in reply.json()["error"]
    assert http.get("/api/v1/workspaces/default/models/junk", headers=admin_headers).status_code == 404


@pytest.mark.parametrize(
    ("spec", "fragment"),
    [
        ({"steps": [{"name": "m", "model": "missing-model:1"}]}, "missing-model"),
        ({"steps": [{"name": "s", "python": "nowhere.module:Step"}]}, "cannot import"),
        (
            {
                "steps": [
                    {"name": "s", "python": "pipelines.builtin:Select", "config": {"columns": ["a"]}},
                    {"name": "s", "python": "pipelines.builtin:Select", "config": {"columns": ["a"]}},
                ]
            },
            "duplicate step",
        ),
        (
            {
                "steps": [{"name": "s", "python": "pipelines.builtin:Select", "config": {"columns": ["a"]}}],
                "colour": "red",
            },
            "colour",
        ),
    ],
)
def test_bad_specs_are_422_and_create_no_version(http, admin_headers, spec, fragment) -> None:
    reply = http.put("/api/v1/workspaces/default/pipelines/broken", json=spec, headers=admin_headers)
    assert reply.status_code == 422, reply.text
    assert fragment in reply.json()["error"]
    assert http.get("/api/v1/workspaces/default/pipelines/broken", headers=admin_headers).status_code == 404


def test_spec_body_errors(http, admin_headers) -> None:
    reply = http.put(
        "/api/v1/workspaces/default/pipelines/broken",
        content=b"{oops",
        headers={**admin_headers, "content-type": "application/json"},
    )
    assert reply.status_code == 400
    reply = http.put(
        "/api/v1/workspaces/default/pipelines/broken",
        content=b"x",
        headers={**admin_headers, "content-type": "text/csv"},
    )
    assert reply.status_code == 415


def test_yaml_spec_and_identical_reapply(http, admin_headers, fraud_pipeline) -> None:
    yaml_spec = (
        "steps:\n  - name: model\n    model: fraud\n"
        "    columns: [amount, age, n_tx, hour, merchant_risk, distance_km]\n"
    )
    headers = {**admin_headers, "content-type": "application/yaml"}
    first = http.put("/api/v1/workspaces/default/pipelines/yaml-one", content=yaml_spec, headers=headers)
    assert first.status_code == 201 and first.json()["version"] == 1
    again = http.put("/api/v1/workspaces/default/pipelines/yaml-one", content=yaml_spec, headers=headers)
    assert again.status_code == 200 and again.json()["version"] == 1


def test_openapi_is_served(http) -> None:
    reply = http.get("/api/v1/openapi.json")
    assert reply.status_code == 200 and "/api/v1/workspaces" in reply.json()["paths"]


def test_token_lifecycle_expiry_revocation_within_a_second_and_audit(
    http, admin, admin_headers, corral, fraud_pipeline
) -> None:
    from cluster.sdk import Client, CorralAPIError

    admin.create_workspace("lifecycle")
    owner = Client(corral.base_url, token=admin.create_token("owner", "lifecycle"), workspace="lifecycle")
    short = owner.new_token("viewer", expires_in="1s")
    assert short["expires_at"] is not None and short["role"] == "viewer"
    assert http.get("/api/v1/workspaces", headers=bearer(short["token"])).status_code == 200
    time.sleep(1.2)
    reply = http.get("/api/v1/workspaces", headers=bearer(short["token"]))
    assert reply.status_code == 401 and f"token {short['id']} expired at" in reply.json()["error"]

    # a default-workspace viewer calling the deployed pipeline, revoked while the router has it cached
    viewer = admin.new_token("viewer")
    infer = "/ws/default/v2/models/fraud/infer"
    row = b'[{"amount": 10.0, "age": 30, "n_tx": 3, "hour": 12, "merchant_risk": 0.1, "distance_km": 2.0}]'
    headers = {**bearer(viewer["token"]), "content-type": "application/json; format=pandas-records"}
    assert http.post(infer, content=row, headers=headers).status_code == 200
    assert viewer["id"] in [t["id"] for t in admin.tokens()]
    admin.revoke_token(viewer["id"])
    revoked_at = time.monotonic()
    while http.post(infer, content=row, headers=headers).status_code == 200:
        assert time.monotonic() - revoked_at < 1.0, "a revoked token was still served after 1 s"
        time.sleep(0.05)
    reply = http.post(infer, content=row, headers=headers)
    assert reply.status_code == 401 and "was revoked" in reply.json()["error"]
    assert viewer["id"] not in [t["id"] for t in admin.tokens()]
    assert http.delete(f"/api/v1/workspaces/default/tokens/{viewer['id']}", headers=admin_headers).status_code == 404

    rows = owner.audit()
    assert rows and (rows[0]["action"], rows[0]["target"], rows[0]["status"]) == ("token.create", short["id"], 201)
    assert (rows[0]["method"], rows[0]["path"]) == ("POST", "/api/v1/workspaces/lifecycle/tokens")
    assert rows[0]["token_id"] and rows[0]["role"] == "owner"
    viewer_client = Client(corral.base_url, token=owner.create_token("viewer"), workspace="lifecycle")
    with pytest.raises(CorralAPIError) as refused:
        viewer_client.audit()
    assert refused.value.status == 403 and "owner role" in refused.value.message
    default_audit = admin.audit()
    tokens = "/api/v1/workspaces/default/tokens"
    about = [(r["action"], r["status"], r["method"], r["path"]) for r in default_audit if r["target"] == viewer["id"]]
    assert about == [  # newest first: the second revoke found no token
        ("token.revoke", 404, "DELETE", f"{tokens}/{viewer['id']}"),
        ("token.revoke", 204, "DELETE", f"{tokens}/{viewer['id']}"),
        ("token.create", 201, "POST", tokens),
    ]


def test_repeated_failed_authentications_from_one_client_get_a_429(http) -> None:
    headers = {**bearer("crl_guess"), "x-forwarded-for": "198.51.100.23"}
    statuses = [http.get("/api/v1/workspaces", headers=headers).status_code for _ in range(101)]
    assert statuses[:100] == [401] * 100
    reply = http.get("/api/v1/workspaces", headers=headers)
    assert statuses[100] == 429 and reply.status_code == 429
    assert 1 <= int(reply.headers["retry-after"]) <= 61
    assert "too many failed authentications" in reply.json()["error"]
    assert (
        http.get("/api/v1/workspaces", headers={"x-forwarded-for": "198.51.100.24", **bearer("x")}).status_code == 401
    )
