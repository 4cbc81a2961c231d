"""Alembic's environment: migrations run on the connection `cluster.store.migrate` hands over."""

from __future__ import annotations

from alembic import context

from cluster.store.tables import Base

if context.is_offline_mode():
    raise RuntimeError("Corral's migrations run online only, through cluster.store.migrate")

context.configure(
    connection=context.config.attributes["connection"],
    target_metadata=Base.metadata,
    compare_type=True,
    render_as_batch=True,  # SQLite can alter a table only by copying it
)
with context.begin_transaction():  # a no-op inside migrate's transaction, which holds the lock
    context.run_migrations()
