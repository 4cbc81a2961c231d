"""The registry on a real SQLite file and a real PostgreSQL database, and an artifact directory (no Ray)."""

from __future__ import annotations

import io
import time
import zipfile
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from cluster.auth import Principal, Role, hash_token
from cluster.code_packages import CodeLimits
from cluster.convert import to_onnx
from cluster.registry import Registry
from cluster.store.artifacts import ArtifactStore
from cluster.store.db import Database
from cluster.store.tables import Workspace
from pipelines.errors import Conflict, Forbidden, InvalidInput, NotFound, PayloadTooLarge, Unauthenticated

ADMIN = Principal(Role.admin, None)


@pytest.fixture()
def registry(database_url: str, tmp_path: Path) -> Iterator[Registry]:
    """A registry on each backend (SQLite file, fresh PostgreSQL database): every test runs on both."""
    reg = Registry(Database(database_url), ArtifactStore(str(tmp_path / "artifacts")))
    reg.ensure_admin(hash_token("admin-secret"))
    yield reg
    reg.db.close()


@pytest.fixture(scope="module")
def onnx_model() -> bytes:
    x = np.random.default_rng(0).normal(size=(100, 3)).astype(np.float32)
    return to_onnx(LogisticRegression().fit(x, x[:, 0] > 0), n_features=3)


def spec(model: str = "m:1", columns: list[str] | None = None) -> dict:
    return {
        "steps": [
            {"name": "pre", "python": "pipelines.builtin:Select", "config": {"columns": ["a", "b", "c"]}},
            {"name": "model", "model": model, "columns": columns or ["a", "b", "c"]},
            {
                "name": "post",
                "python": "pipelines.builtin:Threshold",
                "config": {"column": "probabilities", "index": 1, "threshold": 0.5},
            },
        ]
    }


def test_admin_token_and_default_workspace(registry: Registry) -> None:
    assert registry.authenticate("admin-secret").is_admin
    assert registry.list_workspaces(ADMIN) == ["default"]
    with pytest.raises(Unauthenticated):
        registry.authenticate("nope")
    with pytest.raises(Unauthenticated):
        registry.authenticate(None)


def test_roles_and_workspace_isolation(registry: Registry) -> None:
    registry.create_workspace(ADMIN, "a")
    registry.create_workspace(ADMIN, "b")
    with pytest.raises(Conflict):
        registry.create_workspace(ADMIN, "a")
    viewer = registry.authenticate(registry.create_token(ADMIN, "a", "viewer")["token"])
    assert registry.list_workspaces(viewer) == ["a"]
    with pytest.raises(Forbidden):
        registry.put_pipeline(viewer, "a", "p", spec())
    with pytest.raises(NotFound):  # another workspace: 404, never 403 (no enumeration)
        registry.list_pipelines(viewer, "b")
    with pytest.raises(Forbidden):
        registry.create_token(viewer, "a", "owner")


def test_lists_sort_names_the_same_on_every_backend(registry: Registry, onnx_model: bytes) -> None:
    names = ["ab", "a1", "a-b", "a_b", "a-c"]  # a collation like en-US orders these apart from byte order
    for name in names:
        registry.create_workspace(ADMIN, name)
        registry.upload_model(ADMIN, "default", name, onnx_model)
    assert registry.list_workspaces(ADMIN) == sorted([*names, "default"])
    assert [m["name"] for m in registry.list_models(ADMIN, "default")] == sorted(names)


def test_models_version_and_dedupe(registry: Registry, onnx_model: bytes) -> None:
    first = registry.upload_model(ADMIN, "default", "m", onnx_model)
    again = registry.upload_model(ADMIN, "default", "m", onnx_model)
    assert first["version"] == again["version"] == 1
    assert first["inputs"][0]["shape"] == [-1, 3]
    assert registry.artifacts.get(first["sha256"]) == onnx_model


def test_invalid_onnx_writes_nothing(registry: Registry) -> None:
    with pytest.raises(InvalidInput, match="ONNX"):
        registry.upload_model(ADMIN, "default", "bad", b"not onnx at all")
    assert registry.list_models(ADMIN, "default") == []


def test_pipeline_versions_are_immutable_and_identical_specs_reuse_them(registry: Registry, onnx_model: bytes) -> None:
    registry.upload_model(ADMIN, "default", "m", onnx_model)
    assert registry.put_pipeline(ADMIN, "default", "p", spec()) == (1, True)
    assert registry.put_pipeline(ADMIN, "default", "p", spec()) == (1, False)
    changed = spec()
    changed["steps"][2]["config"]["threshold"] = 0.9
    assert registry.put_pipeline(ADMIN, "default", "p", changed) == (2, True)
    assert [v["version"] for v in registry.pipeline_versions(ADMIN, "default", "p")] == [1, 2]


@pytest.mark.parametrize(
    ("bad", "fragment"),
    [
        (spec(model="missing:1"), "upload it"),
        ({"steps": [{"name": "x", "python": "no_such_module:Step"}]}, "cannot import module"),
        ({"steps": [{"name": "x", "python": "pipelines.builtin:Nope"}]}, "has no class"),
        (
            {"steps": [{"name": "x", "python": "pipelines.builtin:Select", "config": {"colums": ["a"]}}]},
            "config",
        ),
        (spec(columns=["a", "b"]), "takes 3 features"),
        (
            {
                "steps": [
                    {"name": "pre", "python": "pipelines.builtin:Select", "config": {"columns": ["a", "b"]}},
                    {"name": "model", "model": "m:1", "columns": ["a", "b", "c"]},
                ]
            },
            "needs columns ['c']",
        ),
    ],
)
def test_bad_specs_are_rejected_and_nothing_is_stored(
    registry: Registry, onnx_model: bytes, bad: dict, fragment: str
) -> None:
    registry.upload_model(ADMIN, "default", "m", onnx_model)
    with pytest.raises(InvalidInput) as info:
        registry.put_pipeline(ADMIN, "default", "p", bad)
    assert fragment in info.value.message
    assert registry.list_pipelines(ADMIN, "default") == []


def test_uploaded_code_is_checked_by_parsing_not_importing(registry: Registry) -> None:
    source = (
        b"raise SystemExit('imported!')\n"
        b"class Double:\n    def __init__(self, config): pass\n    def __call__(self, t): return t\n"
    )
    info = registry.upload_code(ADMIN, "default", "steps", "my_steps.py", source)
    assert info["modules"] == ["my_steps"]
    ok = {"steps": [{"name": "d", "python": "my_steps:Double", "code": "steps:1"}]}
    assert registry.put_pipeline(ADMIN, "default", "p", ok) == (1, True)
    with pytest.raises(InvalidInput, match="no top-level class"):
        registry.put_pipeline(
            ADMIN, "default", "q", {"steps": [{"name": "d", "python": "my_steps:Triple", "code": "steps"}]}
        )
    with pytest.raises(InvalidInput, match=r"\.py module or a \.zip"):
        registry.upload_code(ADMIN, "default", "bad", "steps.exe", b"MZ")


def _zip(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, data in files.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def test_a_zip_bomb_is_a_413_before_it_is_expanded(registry: Registry) -> None:
    # 60 MB of one byte compress to ~60 KB: over the 50 MB unpacked limit, refused from the directory
    bomb = _zip({"steps/__init__.py": b"", "steps/data.py": b"#" * (60 * 1024 * 1024)})
    assert len(bomb) < 1024 * 1024
    with pytest.raises(PayloadTooLarge, match=r"expands to 62,914,560 bytes, above the limit of 52,428,800") as info:
        registry.upload_code(ADMIN, "default", "bomb", "steps.zip", bomb)
    assert "CORRAL_MAX_CODE_UNPACKED_BYTES" in info.value.message
    fine = registry.upload_code(ADMIN, "default", "bomb", "steps.py", b"class A:\n    pass\n")
    assert fine["version"] == 1  # the refused upload stored no version


def test_a_zip_of_too_many_files_is_a_413_naming_the_setting(database_url: str, tmp_path: Path) -> None:
    small = Registry(
        Database(database_url),
        ArtifactStore(str(tmp_path / "artifacts")),
        CodeLimits(max_files=3, max_unpacked_bytes=10_000),
    )
    small.ensure_admin(hash_token("t"))
    many = _zip({f"pkg/m{i}.py": b"x = 1\n" for i in range(4)})
    with pytest.raises(PayloadTooLarge, match=r"holds 4 files, above the limit of 3.*CORRAL_MAX_CODE_FILES"):
        small.upload_code(ADMIN, "default", "many", "pkg.zip", many)
    fits = _zip({"pkg/__init__.py": b"", "pkg/steps.py": b"class A:\n    pass\n"})
    assert small.upload_code(ADMIN, "default", "fits", "pkg.zip", fits)["modules"] == ["pkg"]


def test_tokens_expire_are_listed_without_secrets_and_revoke_by_id(registry: Registry) -> None:
    registry.create_workspace(ADMIN, "t")
    short = registry.create_token(ADMIN, "t", "viewer", expires_in_s=0.2)
    lasting = registry.create_token(ADMIN, "t", "editor")
    assert short["expires_at"] is not None and lasting["expires_at"] is None
    assert registry.authenticate(short["token"]).token_id == short["id"] == hash_token(short["token"])[:16]
    listed = registry.list_tokens(ADMIN, "t")
    assert [t["id"] for t in listed] == [short["id"], lasting["id"]]
    assert all("token" not in t and set(t) == {"id", "role", "created_at", "expires_at"} for t in listed)
    time.sleep(0.25)
    with pytest.raises(Unauthenticated, match=f"token {short['id']} expired at"):
        registry.authenticate(short["token"])
    registry.revoke_token(ADMIN, "t", lasting["id"])
    with pytest.raises(Unauthenticated, match=f"token {lasting['id']} was revoked"):
        registry.authenticate(lasting["token"])
    assert lasting["id"] not in [t["id"] for t in registry.list_tokens(ADMIN, "t")]
    with pytest.raises(NotFound, match="has no token 'feedfacefeedface'"):
        registry.revoke_token(ADMIN, "t", "feedfacefeedface")
    with pytest.raises(NotFound):  # already revoked
        registry.revoke_token(ADMIN, "t", lasting["id"])
    for wildcard in ("_" * 16, short["id"][:15] + "%"):  # never a LIKE pattern matching a live token
        with pytest.raises(NotFound):
            registry.revoke_token(ADMIN, "t", wildcard)
    with pytest.raises(InvalidInput, match="positive duration"):
        registry.create_token(ADMIN, "t", "viewer", expires_in_s=0)
    viewer = registry.authenticate(registry.create_token(ADMIN, "t", "viewer")["token"])
    with pytest.raises(Forbidden):
        registry.list_tokens(viewer, "t")


def test_audit_rows_come_back_newest_first_for_owners_only(registry: Registry) -> None:
    registry.create_workspace(ADMIN, "au")
    owner = registry.authenticate(registry.create_token(ADMIN, "au", "owner")["token"])
    ws = "/api/v1/workspaces/au"
    registry.record_audit(owner, "au", "pipeline.apply", "p", 201, method="PUT", path=f"{ws}/pipelines/p")
    registry.record_audit(None, "au", "pipeline.deploy", "p", 401, method="POST", path=f"{ws}/pipelines/p/deploy")
    registry.record_audit(owner, "other", "pipeline.apply", "q", 201)
    registry.record_audit(None, "au", "rollout.advance", "p", 200)  # made by the control plane, no request
    now = datetime.now(UTC)
    rows = registry.audit(owner, "au", now - timedelta(minutes=1), now + timedelta(minutes=1), 10)
    assert [(r["action"], r["target"], r["status"], r["token_id"], r["method"], r["path"]) for r in rows] == [
        ("rollout.advance", "p", 200, None, None, None),
        ("pipeline.deploy", "p", 401, None, "POST", f"{ws}/pipelines/p/deploy"),
        ("pipeline.apply", "p", 201, owner.token_id, "PUT", f"{ws}/pipelines/p"),
    ]
    assert rows[2]["role"] == "owner" and rows[0]["time"].endswith("Z")
    viewer = registry.authenticate(registry.create_token(ADMIN, "au", "viewer")["token"])
    with pytest.raises(Forbidden):
        registry.audit(viewer, "au", now - timedelta(minutes=1), now, 10)


def test_a_code_file_name_longer_than_its_column_is_invalid_input(registry: Registry) -> None:
    with pytest.raises(InvalidInput, match="keep it to 255"):
        registry.upload_code(ADMIN, "default", "long", "s" * 253 + ".py", b"class A:\n    pass\n")
    assert registry.upload_code(ADMIN, "default", "long", "s" * 252 + ".py", b"class A:\n    pass\n")["version"] == 1


def test_a_record_written_first_by_a_concurrent_transaction_is_a_conflict(registry: Registry) -> None:
    with pytest.raises(Conflict, match="at the same time: retry"), registry.db.session() as late:
        late.add(Workspace(name="race"))  # written at commit, after the other transaction took the name
        with registry.db.session() as early:
            early.add(Workspace(name="race"))
    assert "race" in registry.list_workspaces(ADMIN)
