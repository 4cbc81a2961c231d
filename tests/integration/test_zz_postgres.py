"""The whole cluster on PostgreSQL: `corral up` with CORRAL_DATABASE_URL pointing at a real server
(started by the tests), migrated on the way up; models, pipelines, tokens, audit and the restore
after `corral down` all live in it. The session's own cluster (SQLite) comes back afterwards."""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest
from sqlalchemy import create_engine, text

from examples.fraud import FEATURES, fraud_pipeline_spec, make_transactions

pytestmark = [pytest.mark.integration, pytest.mark.slow]
RECORDS = {"content-type": "application/json; format=pandas-records"}


def _infer(base_url: str, token: str) -> httpx.Response:
    body = make_transactions(20, seed=4)[FEATURES].to_json(orient="records")
    return httpx.post(
        f"{base_url}/ws/default/v2/models/pg-fraud/infer",
        content=body,
        headers={"authorization": f"Bearer {token}", **RECORDS},
        timeout=60,
    )


def test_corral_runs_on_postgresql_and_restores_from_it(corral: Any, postgres: Any, fraud_model: Any) -> None:
    from cluster import lifecycle
    from cluster.sdk import Client

    admin_token = corral.admin_token_path.read_text().strip()
    with postgres.database() as url:
        on_pg = corral.model_copy(update={"database_url": url})
        lifecycle.down(corral, say=print)
        try:
            lifecycle.up(on_pg, say=print)
            engine = create_engine(url)
            with engine.connect() as conn:  # migrated on the way up, to the newest revision
                assert conn.execute(text("SELECT version_num FROM alembic_version")).scalar() == "0002"
            admin = Client(on_pg.base_url, admin_token)
            assert admin.pipelines() == []  # a new store: nothing of the SQLite one
            info = admin.upload_model("pg-fraud", fraud_model["model"], n_features=len(FEATURES))
            spec = fraud_pipeline_spec(f"pg-fraud:{info['version']}", fraud_model["mean"], fraud_model["std"])
            admin.pipeline("pg-fraud", spec).deploy()
            assert _infer(on_pg.base_url, admin_token).status_code == 200

            viewer = admin.new_token("viewer", "default")
            assert _infer(on_pg.base_url, viewer["token"]).status_code == 200
            admin.revoke_token(viewer["id"], "default")
            time.sleep(1.5)  # the routers' auth cache re-checks within 1 s
            assert _infer(on_pg.base_url, viewer["token"]).status_code == 401
            changes = {(row["action"], row["target"], row["status"]) for row in admin.audit("default")}
            assert ("POST", "pipelines/pg-fraud/deploy", 200) in changes, changes

            with engine.connect() as conn:  # the rows are in PostgreSQL
                names = conn.execute(text("SELECT name FROM pipelines WHERE deployed")).scalars().all()
                assert names == ["pg-fraud"]
            engine.dispose()

            lifecycle.down(on_pg, say=print)
            restored = lifecycle.up(on_pg, say=print).restored
            assert [(r["name"], r["status"]) for r in restored] == [("pg-fraud", "running")], restored
            assert _infer(on_pg.base_url, admin_token).status_code == 200
        finally:
            lifecycle.down(on_pg, say=print)
            lifecycle.up(corral, say=print)
