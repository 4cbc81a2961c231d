"""Schema migrations on a SQLite file and a real PostgreSQL database: stores made by older code upgrade in place."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from cluster.auth import Principal, Role, hash_token
from cluster.registry import Registry
from cluster.store import migrate
from cluster.store.artifacts import ArtifactStore
from cluster.store.db import Database
from cluster.store.tables import Base
from pipelines.errors import Unauthenticated

ADMIN = Principal(Role.admin, None)
SIGNATURE_IN = [{"name": "input", "datatype": "FP32", "shape": [-1, 3]}]
SIGNATURE_OUT = [{"name": "probabilities", "datatype": "FP32", "shape": [-1, 2]}]
SPEC = {"variants": {"main": {"steps": [{"name": "model", "model": "m:1", "columns": ["a", "b", "c"]}]}}}
CREATED = datetime(2026, 11, 20, 8, 30, tzinfo=UTC)
HEAD = "0003"


@pytest.fixture()
def engine(database_url: str) -> Iterator[sa.Engine]:
    """A plain engine on the test database, for building old stores the way older code did."""
    engine = sa.create_engine(database_url)
    yield engine
    engine.dispose()


def revision_of(engine: sa.Engine) -> str | None:
    with engine.connect() as conn:
        return migrate.current_revision(conn)


def columns(engine: sa.Engine, table: str) -> set[str]:
    return {c["name"] for c in sa.inspect(engine).get_columns(table)}


def insert_first_release_rows(engine: sa.Engine) -> None:
    """A workspace, its owner token, a model and a deployed pipeline version, as revision 0001 held them."""
    old = sa.MetaData()
    old.reflect(engine)
    assert "expires_at" not in old.tables["tokens"].c  # really the old schema
    with engine.begin() as conn:
        conn.execute(old.tables["workspaces"].insert(), {"name": "acme", "created_at": CREATED})
        conn.execute(
            old.tables["tokens"].insert(),
            {"token_hash": hash_token("old-owner"), "workspace": "acme", "role": "owner", "created_at": CREATED},
        )
        row = {"workspace": "acme", "name": "m", "version": 1, "sha256": "ab" * 32, "created_at": CREATED}
        conn.execute(old.tables["models"].insert(), {**row, "inputs": SIGNATURE_IN, "outputs": SIGNATURE_OUT})
        row = {"workspace": "acme", "name": "p", "version": 1, "created_at": CREATED}
        resolved = {"main.model": {"model": "m:1", "sha256": "ab" * 32}}
        conn.execute(old.tables["pipeline_versions"].insert(), {**row, "spec": SPEC, "resolved": resolved})
        conn.execute(
            old.tables["pipelines"].insert(),
            {"workspace": "acme", "name": "p", "deployed": True, "deployed_version": 1, "updated_at": CREATED},
        )


def check_upgraded_store(database_url: str, tmp_path: Path) -> None:
    """The old rows are intact and the new columns and table work through the registry."""
    registry = Registry(Database(database_url), ArtifactStore(str(tmp_path / "artifacts")))
    try:
        with registry.db.engine.connect() as conn:
            assert migrate.current_revision(conn) == HEAD
        owner = registry.authenticate("old-owner")  # no expiry, not revoked: the new columns are NULL
        assert (owner.role, owner.workspace) == (Role.owner, "acme")
        [model] = registry.list_models(owner, "acme")
        assert (model["name"], model["version"]) == ("m", 1)
        assert (model["inputs"], model["outputs"]) == (SIGNATURE_IN, SIGNATURE_OUT)
        assert model["created_at"] == CREATED.isoformat()
        version = registry.get_pipeline_version(owner, "acme", "p")
        assert (version.version, version.spec, version.created_at) == (1, SPEC, CREATED)
        assert [p.name for p in registry.deployed_pipelines()] == ["p"]
        fresh = registry.create_token(owner, "acme", "viewer", expires_in_s=3600)
        listed = {t["id"]: t for t in registry.list_tokens(owner, "acme")}
        assert listed[owner.token_id]["expires_at"] is None and listed[fresh["id"]]["expires_at"] is not None
        path = f"/api/v1/workspaces/acme/tokens/{owner.token_id}"
        registry.record_audit(owner, "acme", "token.revoke", owner.token_id, 204, method="DELETE", path=path)
        registry.revoke_token(owner, "acme", owner.token_id)
        with pytest.raises(Unauthenticated, match="was revoked"):
            registry.authenticate("old-owner")
        now = datetime.now(UTC)
        audit = registry.audit(ADMIN, "acme", CREATED, now, 10)
        assert [(a["action"], a["target"], a["status"], a["method"], a["path"]) for a in audit] == [
            ("token.revoke", owner.token_id, 204, "DELETE", path)
        ]
    finally:
        registry.db.close()


def test_head_schema_is_what_tables_py_declares(database_url: str, engine: sa.Engine) -> None:
    Database(database_url).close()
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}), Base.metadata)
    assert diff == [], f"cluster/store/tables.py differs from the migrations' head: add a revision for {diff}"


def test_a_fresh_database_goes_straight_to_head(database_url: str, engine: sa.Engine) -> None:
    assert revision_of(engine) is None
    Database(database_url).close()
    Database(database_url).close()  # the second start finds it at head and changes nothing
    assert revision_of(engine) == HEAD
    assert {"expires_at", "revoked_at"} <= columns(engine, "tokens") and sa.inspect(engine).has_table("audit")
    assert {"method", "path"} <= columns(engine, "audit")


def test_a_first_release_database_upgrades_with_its_rows(database_url: str, engine: sa.Engine, tmp_path: Path) -> None:
    migrate.upgrade(database_url, "0001")
    assert revision_of(engine) == "0001"
    insert_first_release_rows(engine)
    check_upgraded_store(database_url, tmp_path)


def test_a_store_made_before_migrations_is_stamped_then_upgraded(
    database_url: str, engine: sa.Engine, tmp_path: Path
) -> None:
    migrate.upgrade(database_url, "0001")
    with engine.begin() as conn:  # what the first releases left: their tables, no alembic_version
        conn.execute(sa.text("DROP TABLE alembic_version"))
    insert_first_release_rows(engine)
    with engine.connect() as conn:
        assert migrate.legacy_revision(conn) == "0001"
    check_upgraded_store(database_url, tmp_path)


# Audit rows as revision 0002 wrote them (action the HTTP method, target the path after the prefix), and
# the method and path 0003 derives for them.
AUDIT_0002 = [
    ("acme", "POST", "tokens", 201, "POST", "/api/v1/workspaces/acme/tokens"),
    ("acme", "DELETE", "tokens/0123456789abcdef", 204, "DELETE", "/api/v1/workspaces/acme/tokens/0123456789abcdef"),
    ("acme", "POST", "pipelines/p/deploy", 404, "POST", "/api/v1/workspaces/acme/pipelines/p/deploy"),
    ("acme", "PATCH", "workspace", 405, "PATCH", "/api/v1/workspaces/acme"),
    (None, "POST", "workspaces", 201, "POST", "/api/v1/workspaces"),
]


def audit_rows(engine: sa.Engine) -> list[tuple[object, ...]]:
    with engine.connect() as conn:
        query = "SELECT workspace, action, target, status, method, path FROM audit ORDER BY id"
        return [tuple(row) for row in conn.execute(sa.text(query))]


def test_audit_rows_of_0002_keep_their_action_and_target_and_get_their_method_and_path(
    database_url: str, engine: sa.Engine, tmp_path: Path
) -> None:
    migrate.upgrade(database_url, "0002")
    old = sa.MetaData()
    old.reflect(engine)
    assert "method" not in old.tables["audit"].c  # really the old schema
    with engine.begin() as conn:
        conn.execute(old.tables["workspaces"].insert(), {"name": "acme", "created_at": CREATED})
        for workspace, action, target, status, _, _ in AUDIT_0002:
            row = {"workspace": workspace, "action": action, "target": target, "status": status, "time": CREATED}
            conn.execute(old.tables["audit"].insert(), row)
    registry = Registry(Database(database_url), ArtifactStore(str(tmp_path / "artifacts")))
    try:
        assert revision_of(engine) == HEAD
        assert audit_rows(engine) == AUDIT_0002
        path = "/api/v1/workspaces/acme/pipelines/p/undeploy"
        registry.record_audit(ADMIN, "acme", "pipeline.undeploy", "p", 200, method="POST", path=path)
        newest = registry.audit(ADMIN, "acme", CREATED, datetime.now(UTC), 1)[0]
        fields = (newest["action"], newest["target"], newest["method"], newest["path"])
        assert fields == ("pipeline.undeploy", "p", "POST", path)  # longer than the 16 characters of 0002's actions
    finally:
        registry.db.close()


def test_a_downgrade_to_0002_turns_audit_rows_back_into_its_own(
    database_url: str, engine: sa.Engine, tmp_path: Path
) -> None:
    registry = Registry(Database(database_url), ArtifactStore(str(tmp_path / "artifacts")))
    try:
        registry.create_workspace(ADMIN, "acme")
        for workspace, _, _, status, method, path in AUDIT_0002:
            registry.record_audit(ADMIN, workspace, "some.action", "some-name", status, method=method, path=path)
        registry.record_audit(ADMIN, "acme", "workspace.create", "acme", 201, method="POST", path="/api/v1/workspaces")
        registry.record_audit(None, "acme", "rollout.advance", "p", 200)  # made by no request
    finally:
        registry.db.close()
    migrate.downgrade(database_url, "0002")
    assert revision_of(engine) == "0002" and "method" not in columns(engine, "audit")
    with engine.connect() as conn:
        rows = [tuple(r) for r in conn.execute(sa.text("SELECT workspace, action, target FROM audit ORDER BY id"))]
    assert rows == [
        *((w, a, t) for w, a, t, _, _, _ in AUDIT_0002),
        ("acme", "POST", "workspaces"),
        ("acme", "rollout.advance", "p"),
    ]


def test_a_store_of_todays_schema_made_before_migrations_is_only_stamped(
    database_url: str, engine: sa.Engine, tmp_path: Path
) -> None:
    Base.metadata.create_all(engine)  # how the release before migrations made stores
    expires = datetime(2030, 1, 1, tzinfo=UTC)
    with engine.begin() as conn:
        conn.execute(Base.metadata.tables["workspaces"].insert(), {"name": "acme", "created_at": CREATED})
        token = {"token_hash": hash_token("t"), "workspace": "acme", "role": "editor", "created_at": CREATED}
        conn.execute(Base.metadata.tables["tokens"].insert(), {**token, "expires_at": expires})
    registry = Registry(Database(database_url), ArtifactStore(str(tmp_path / "artifacts")))
    try:
        assert revision_of(engine) == HEAD
        assert registry.list_tokens(ADMIN, "acme")[0]["expires_at"] == "2030-01-01T00:00:00Z"
    finally:
        registry.db.close()


def test_a_sqlite_store_older_than_the_first_revision_gets_the_missing_tables(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'old.db'}"
    engine = sa.create_engine(url)
    with engine.begin() as conn:  # the tokens table as the earliest code made it, before datasets and assays
        conn.execute(sa.text("CREATE TABLE workspaces (name VARCHAR(63) PRIMARY KEY, created_at DATETIME)"))
        conn.execute(
            sa.text(
                "CREATE TABLE tokens (token_hash VARCHAR(64) PRIMARY KEY, workspace VARCHAR(63), "
                "role VARCHAR(16), created_at DATETIME)"
            )
        )
        conn.execute(
            sa.text("INSERT INTO tokens VALUES (:h, NULL, 'admin', '2026-11-01 00:00:00')"), {"h": hash_token("old")}
        )
    registry = Registry(Database(url), ArtifactStore(str(tmp_path / "artifacts")))
    assert registry.authenticate("old").is_admin  # the old token still works, with no expiry
    assert {"expires_at", "revoked_at"} <= columns(engine, "tokens")
    assert {"assays", "datasets", "audit"} <= set(sa.inspect(engine).get_table_names())
    assert revision_of(engine) == HEAD
    registry.db.close()
    engine.dispose()


def test_downgrade_to_the_first_release_and_back(database_url: str, engine: sa.Engine) -> None:
    Database(database_url).close()
    migrate.downgrade(database_url, "0001")
    assert revision_of(engine) == "0001" and "expires_at" not in columns(engine, "tokens")
    assert not sa.inspect(engine).has_table("audit")
    migrate.upgrade(database_url)
    assert revision_of(engine) == HEAD and "expires_at" in columns(engine, "tokens")
    assert {"method", "path"} <= columns(engine, "audit")


def test_processes_starting_at_once_migrate_once(database_url: str, engine: sa.Engine) -> None:
    """Control app replicas start together: each one's make_engine waits for the others' migration."""
    starters = 4
    barrier = threading.Barrier(starters)
    errors: list[BaseException] = []

    def start() -> None:
        barrier.wait()
        try:
            Database(database_url).close()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=start) for _ in range(starters)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert errors == []
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalars().all() == [HEAD]
