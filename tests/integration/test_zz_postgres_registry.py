"""The integration suite's registry tests (test_auth_and_registry.py) once more, with the cluster's
registry on a real PostgreSQL server (tests/postgres.py) instead of SQLite: the same tests and
module fixtures, collected here, with the cluster fixtures below pointing at a Corral whose
CORRAL_DATABASE_URL is a fresh PostgreSQL database. The session's own cluster comes back after."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from examples.fraud import FEATURES, fraud_pipeline_spec
from tests.integration.test_auth_and_registry import *  # noqa: F403 (the tests and their fixtures, run again here)

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture(scope="module")
def corral(corral: Any, postgres: Any) -> Iterator[Any]:
    """The session's cluster restarted on a PostgreSQL registry for this module (then back on SQLite)."""
    from cluster import lifecycle

    with postgres.database() as url:
        on_postgres = corral.model_copy(update={"database_url": url})
        lifecycle.down(corral, say=print)
        try:
            lifecycle.up(on_postgres, say=print)
            yield on_postgres
        finally:
            lifecycle.down(on_postgres, say=print)
            lifecycle.up(corral, say=print)


@pytest.fixture(scope="module")
def admin(corral: Any) -> Any:
    from cluster.sdk import Client

    return Client(corral.base_url)


@pytest.fixture(scope="module")
def http(corral: Any) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=corral.base_url, timeout=120) as client:
        yield client


@pytest.fixture(scope="module")
def admin_headers(corral: Any) -> dict[str, str]:
    return {"authorization": f"Bearer {corral.admin_token_path.read_text().strip()}"}


@pytest.fixture(scope="module")
def fraud_pipeline(admin: Any, fraud_model: dict[str, Any]) -> dict[str, Any]:
    """The demo pipeline, deployed on the PostgreSQL-backed cluster as `fraud`."""
    info = admin.upload_model("fraud", fraud_model["model"], n_features=len(FEATURES))
    spec = fraud_pipeline_spec(f"fraud:{info['version']}", fraud_model["mean"], fraud_model["std"])
    pipeline = admin.pipeline("fraud", spec)
    pipeline.deploy()
    return {"model": info, "spec": spec, "pipeline": pipeline}


def test_the_registry_is_in_postgresql_migrated_and_restores_the_cluster(corral: Any, admin: Any, http: Any) -> None:
    """Runs after the registry tests above (pytest keeps the order of definition)."""
    from sqlalchemy import create_engine, text

    from cluster import lifecycle

    assert corral.database_url.startswith("postgresql+psycopg://")
    admin.create_workspace("pg-proof")
    engine = create_engine(corral.database_url)
    with engine.connect() as conn:
        assert conn.execute(text("SELECT version_num FROM alembic_version")).scalar() == "0003"  # migrated by up
        assert conn.execute(text("SELECT count(*) FROM workspaces WHERE name = 'pg-proof'")).scalar() == 1
        deployed = set(conn.execute(text("SELECT workspace || '/' || name FROM pipelines WHERE deployed")).scalars())
    engine.dispose()
    assert {"default/fraud", "team-b/secret"} <= deployed, deployed

    lifecycle.down(corral, say=print)
    restored = lifecycle.up(corral, say=print).restored  # from PostgreSQL
    assert {(r["workspace"], r["name"], r["status"]) for r in restored} >= {
        ("default", "fraud", "running"),
        ("team-b", "secret", "running"),
    }, restored
    row = b'[{"amount": 10.0, "age": 30, "n_tx": 3, "hour": 12, "merchant_risk": 0.1, "distance_km": 2.0}]'
    reply = http.post(
        "/ws/default/v2/models/fraud/infer",
        content=row,
        headers={**admin._http.headers, "content-type": "application/json; format=pandas-records"},
    )
    assert reply.status_code == 200, reply.text
