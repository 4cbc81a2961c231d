"""Bring a registry database to the schema of this code: alembic migrations under one lock.

Databases made before migrations existed (no `alembic_version` table) are recognised by their tables,
stamped at the revision they match, then upgraded like any other.
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Connection, Engine, create_engine, event, inspect, text
from sqlalchemy.pool import NullPool

MIGRATIONS = Path(__file__).with_name("migrations")
# Any key shared by all Corral processes: PostgreSQL advisory locks are per database.
_LOCK_KEY = 0x636F7272616C  # "corral"
_FIRST_RELEASE_TABLES = frozenset(
    {"workspaces", "tokens", "models", "code", "datasets", "pipeline_versions", "pipelines", "assays", "assay_results"}
)


def upgrade(url: str, revision: str = "head") -> None:
    """Migrate the database at `url` to `revision`, in one transaction that other processes wait for."""
    engine = _migration_engine(url)
    try:
        with engine.connect() as conn, conn.begin():
            _lock(conn)
            if current_revision(conn) is None:
                legacy = legacy_revision(conn)
                if legacy is not None:
                    command.stamp(_config(conn), legacy)
            command.upgrade(_config(conn), revision)
    finally:
        engine.dispose()


def downgrade(url: str, revision: str) -> None:
    engine = _migration_engine(url)
    try:
        with engine.connect() as conn, conn.begin():
            _lock(conn)
            command.downgrade(_config(conn), revision)
    finally:
        engine.dispose()


def current_revision(conn: Connection) -> str | None:
    return MigrationContext.configure(conn).get_current_revision()


def legacy_revision(conn: Connection) -> str | None:
    """The revision a database without `alembic_version` matches; None for an empty one or one older than
    the first revision (which then creates the tables it lacks)."""
    schema = inspect(conn)
    tables = set(schema.get_table_names())
    token_columns = {c["name"] for c in schema.get_columns("tokens")} if "tokens" in tables else set()
    audit_columns = {c["name"] for c in schema.get_columns("audit")} if "audit" in tables else set()
    if audit_columns >= {"method", "path"} and token_columns >= {"expires_at", "revoked_at"}:
        return "0003"
    if "audit" in tables and token_columns >= {"expires_at", "revoked_at"}:
        return "0002"
    if tables >= _FIRST_RELEASE_TABLES:
        return "0001"
    return None


def _config(conn: Connection) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = conn
    return config


def _lock(conn: Connection) -> None:
    """Serialise migrations across processes until the transaction ends. SQLite's lock is the
    `BEGIN IMMEDIATE` of `_migration_engine`."""
    if conn.dialect.name == "postgresql":
        conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _LOCK_KEY})


def _migration_engine(url: str) -> Engine:
    if not url.startswith("sqlite"):
        return create_engine(url, poolclass=NullPool)
    engine = create_engine(url, poolclass=NullPool, connect_args={"timeout": 30})

    # pysqlite starts transactions lazily and never for DDL; take the write lock up front instead, so the
    # whole migration is one transaction and a second process waits for it.
    @event.listens_for(engine, "connect")
    def _manual_transactions(dbapi_conn, _record):  # type: ignore[no-untyped-def]
        dbapi_conn.isolation_level = None

    @event.listens_for(engine, "begin")
    def _begin_immediate(conn):  # type: ignore[no-untyped-def]
        conn.exec_driver_sql("BEGIN IMMEDIATE")

    return engine
