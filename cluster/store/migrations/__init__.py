"""Alembic migrations of the registry schema, run by `cluster.store.migrate` (no alembic.ini needed).

A change to cluster/store/tables.py needs a new revision here: a file in versions/ with the next number
as `revision`, the previous one as `down_revision`, and the same change in `upgrade()` and its inverse in
`downgrade()`. tests/unit/test_migrations.py fails, naming the difference, until the head matches tables.py.
"""
