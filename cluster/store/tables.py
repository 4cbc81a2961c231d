"""Registry schema (SQLAlchemy 2 ORM). SQLite by default, any SQLAlchemy URL to scale out.

Every change needs a migration in cluster/store/migrations/versions (a unit test compares the two).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, Boolean, DateTime, Dialect, ForeignKey, Integer, String, TypeDecorator, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, declared_attr, mapped_column


def utcnow() -> datetime:
    return datetime.now(UTC)


def _utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """A moment stored in UTC and read back aware in UTC on every backend: SQLite drops the zone and
    PostgreSQL answers in the session's zone. Naive datetimes given to it are taken as UTC."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        return None if value is None else _utc(value)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        return None if value is None else _utc(value)


class Base(DeclarativeBase):
    type_annotation_map = {dict[str, Any]: JSON, list[Any]: JSON}


class Workspace(Base):
    __tablename__ = "workspaces"
    name: Mapped[str] = mapped_column(String(63), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class Token(Base):
    __tablename__ = "tokens"
    token_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    workspace: Mapped[str | None] = mapped_column(ForeignKey("workspaces.name"), nullable=True)  # None: admin
    role: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    # Added by migration 0002: a change here needs a new revision in cluster/store/migrations/versions.
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)

    @property
    def id(self) -> str:
        """The public id of a token (never the secret): the first 16 hex digits of its hash."""
        return self.token_hash[:16]


class AuditEntry(Base):
    """One control-plane change: who (token id and role), what, on what, when, and how it ended."""

    __tablename__ = "audit"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    time: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, index=True)
    workspace: Mapped[str | None] = mapped_column(String(63), nullable=True, index=True)
    token_id: Mapped[str | None] = mapped_column(String(16), nullable=True)
    role: Mapped[str | None] = mapped_column(String(16), nullable=True)
    action: Mapped[str] = mapped_column(String(64))  # a verb on a noun: pipeline.deploy (migration 0003)
    target: Mapped[str] = mapped_column(String(512))  # the object's name
    status: Mapped[int] = mapped_column(Integer)
    # Added by migration 0003: the request behind the change; None for changes no request made.
    method: Mapped[str | None] = mapped_column(String(16), nullable=True)
    path: Mapped[str | None] = mapped_column(String(1024), nullable=True)


class Versioned:
    """Rows that are immutable numbered versions of a name within a workspace."""

    @declared_attr.directive
    def __table_args__(cls) -> tuple[Any, ...]:
        return (UniqueConstraint("workspace", "name", "version"),)  # one constraint object per table

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    workspace: Mapped[str] = mapped_column(ForeignKey("workspaces.name"))
    name: Mapped[str] = mapped_column(String(63))
    version: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class ModelVersion(Versioned, Base):
    __tablename__ = "models"
    sha256: Mapped[str] = mapped_column(String(64))
    inputs: Mapped[list[Any]] = mapped_column(JSON)
    outputs: Mapped[list[Any]] = mapped_column(JSON)


class CodeVersion(Versioned, Base):
    __tablename__ = "code"
    sha256: Mapped[str] = mapped_column(String(64))
    filename: Mapped[str] = mapped_column(String(255))
    modules: Mapped[list[Any]] = mapped_column(JSON)  # top-level module/package names it provides


class DatasetVersion(Versioned, Base):
    """A reference dataset (e.g. for explainers): Parquet bytes in the artifact store, described here."""

    __tablename__ = "datasets"
    sha256: Mapped[str] = mapped_column(String(64))
    rows: Mapped[int] = mapped_column(Integer)
    columns: Mapped[list[Any]] = mapped_column(JSON)  # [{"name", "type"}], Arrow type names


class PipelineVersion(Versioned, Base):
    __tablename__ = "pipeline_versions"
    spec: Mapped[dict[str, Any]] = mapped_column(JSON)
    resolved: Mapped[dict[str, Any]] = mapped_column(JSON)  # model refs -> exact versions, code refs


class Pipeline(Base):
    """Deployment state of a pipeline: the source of truth that `corral up` restores."""

    __tablename__ = "pipelines"
    workspace: Mapped[str] = mapped_column(ForeignKey("workspaces.name"), primary_key=True)
    name: Mapped[str] = mapped_column(String(63), primary_key=True)
    deployed: Mapped[bool] = mapped_column(Boolean, default=False)
    deployed_version: Mapped[int | None] = mapped_column(Integer, nullable=True)
    traffic: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow)


class Assay(Base):
    """A drift assay: its spec, the baseline binned once at apply time, and where its next window starts."""

    __tablename__ = "assays"
    workspace: Mapped[str] = mapped_column(ForeignKey("workspaces.name"), primary_key=True)
    name: Mapped[str] = mapped_column(String(63), primary_key=True)
    spec: Mapped[dict[str, Any]] = mapped_column(JSON)
    edges: Mapped[list[Any]] = mapped_column(JSON)
    expected: Mapped[list[Any]] = mapped_column(JSON)
    next_start: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow)


class AssayResult(Base):
    __tablename__ = "assay_results"
    __table_args__ = (UniqueConstraint("workspace", "assay", "window_start"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    workspace: Mapped[str] = mapped_column(String(63))
    assay: Mapped[str] = mapped_column(String(63))
    window_start: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)
    window_end: Mapped[datetime] = mapped_column(UTCDateTime())
    status: Mapped[str] = mapped_column(String(16))
    result: Mapped[dict[str, Any]] = mapped_column(JSON)  # WindowResult.to_dict()
