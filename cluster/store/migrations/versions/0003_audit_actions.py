"""Audit rows read as actions: `action` a dotted verb on a noun (up to 64 characters), the request's
`method` and `path` beside it.

Revision ID: 0003
Revises: 0002

Rows written before this revision keep their action (then the HTTP method) and target (then the path
after /api/v1/workspaces/{w}/, or after /api/v1/ outside a workspace); their method and path are derived
from those, exactly, so every row has both. Downgrading turns HTTP rows back into 0002's.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

API = "/api/v1/"
audit = sa.table(
    "audit",
    sa.column("workspace", sa.String),
    sa.column("action", sa.String),
    sa.column("target", sa.String),
    sa.column("method", sa.String),
    sa.column("path", sa.String),
)
# The path prefix 0002 cut off the target (0002 wrote "workspace" for the workspace's own path).
_PREFIX = sa.case(
    (audit.c.workspace.is_(None), sa.literal(API)),
    else_=sa.literal(API + "workspaces/") + audit.c.workspace + sa.literal("/"),
)


def upgrade() -> None:
    with op.batch_alter_table("audit") as batch:
        batch.alter_column("action", existing_type=sa.String(16), type_=sa.String(64), existing_nullable=False)
        batch.add_column(sa.Column("method", sa.String(16), nullable=True))
        batch.add_column(sa.Column("path", sa.String(1024), nullable=True))
    own_workspace = sa.and_(audit.c.workspace.is_not(None), audit.c.target == "workspace")
    path = sa.case(
        (own_workspace, sa.literal(API + "workspaces/") + audit.c.workspace),
        else_=_PREFIX + audit.c.target,
    )
    op.execute(audit.update().values(method=audit.c.action, path=path))


def downgrade() -> None:
    # Back to 0002's meaning: action the HTTP method, target the path after the prefix ("workspace" for the
    # workspace's own path; a workspace's creation, which now files under it, after /api/v1/). A row no
    # request made (no method) keeps its action, cut to 0002's 16 characters.
    in_prefix = sa.func.substr(audit.c.path, 1, sa.func.length(_PREFIX)) == _PREFIX
    rest = sa.func.substr(audit.c.path, sa.func.length(_PREFIX) + 1)
    target = sa.case(
        (in_prefix, sa.func.coalesce(sa.func.nullif(rest, ""), "workspace")),
        (audit.c.path == sa.literal(API + "workspaces/") + audit.c.workspace, "workspace"),
        else_=sa.func.substr(audit.c.path, len(API) + 1),
    )
    op.execute(audit.update().where(audit.c.method.is_not(None)).values(action=audit.c.method, target=target))
    op.execute(audit.update().where(audit.c.method.is_(None)).values(action=sa.func.substr(audit.c.action, 1, 16)))
    with op.batch_alter_table("audit") as batch:
        batch.drop_column("path")
        batch.drop_column("method")
        batch.alter_column("action", existing_type=sa.String(64), type_=sa.String(16), existing_nullable=False)
