"""The registry as the first releases made it: before token expiry and the audit log.

Revision ID: 0001
Revises: (none)

Frozen here (never imported from tables.py, which moves on). Stores made before migrations existed
may lack some of these tables (older code created them on first use), so only the missing ones are made.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def _versioned(metadata: sa.MetaData, name: str, *columns: sa.Column) -> sa.Table:
    """A table of immutable numbered versions of a name within a workspace."""
    return sa.Table(
        name,
        metadata,
        *columns,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("workspace", sa.String(63), sa.ForeignKey("workspaces.name"), nullable=False),
        sa.Column("name", sa.String(63), nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("workspace", "name", "version"),
    )


def schema() -> sa.MetaData:
    metadata = sa.MetaData()
    sa.Table(
        "workspaces",
        metadata,
        sa.Column("name", sa.String(63), primary_key=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    sa.Table(
        "tokens",
        metadata,
        sa.Column("token_hash", sa.String(64), primary_key=True),
        sa.Column("workspace", sa.String(63), sa.ForeignKey("workspaces.name"), nullable=True),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    _versioned(
        metadata,
        "models",
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("inputs", sa.JSON, nullable=False),
        sa.Column("outputs", sa.JSON, nullable=False),
    )
    _versioned(
        metadata,
        "code",
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("filename", sa.String(255), nullable=False),
        sa.Column("modules", sa.JSON, nullable=False),
    )
    _versioned(
        metadata,
        "datasets",
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("rows", sa.Integer, nullable=False),
        sa.Column("columns", sa.JSON, nullable=False),
    )
    _versioned(
        metadata,
        "pipeline_versions",
        sa.Column("spec", sa.JSON, nullable=False),
        sa.Column("resolved", sa.JSON, nullable=False),
    )
    sa.Table(
        "pipelines",
        metadata,
        sa.Column("workspace", sa.String(63), sa.ForeignKey("workspaces.name"), primary_key=True),
        sa.Column("name", sa.String(63), primary_key=True),
        sa.Column("deployed", sa.Boolean, nullable=False),
        sa.Column("deployed_version", sa.Integer, nullable=True),
        sa.Column("traffic", sa.JSON, nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )
    sa.Table(
        "assays",
        metadata,
        sa.Column("workspace", sa.String(63), sa.ForeignKey("workspaces.name"), primary_key=True),
        sa.Column("name", sa.String(63), primary_key=True),
        sa.Column("spec", sa.JSON, nullable=False),
        sa.Column("edges", sa.JSON, nullable=False),
        sa.Column("expected", sa.JSON, nullable=False),
        sa.Column("next_start", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )
    sa.Table(
        "assay_results",
        metadata,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("workspace", sa.String(63), nullable=False),
        sa.Column("assay", sa.String(63), nullable=False),
        sa.Column("window_start", sa.DateTime(timezone=True), nullable=False, index=True),
        sa.Column("window_end", sa.DateTime(timezone=True), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("result", sa.JSON, nullable=False),
        sa.UniqueConstraint("workspace", "assay", "window_start"),
    )
    return metadata


def upgrade() -> None:
    schema().create_all(op.get_bind(), checkfirst=True)


def downgrade() -> None:
    schema().drop_all(op.get_bind())
