"""Shared fixtures. Integration and e2e tests get one real local Ray cluster with Corral for the whole run."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from examples.fraud import FEATURES, fraud_pipeline_spec, make_transactions, train_fraud_model


@pytest.fixture(scope="session")
def corral_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    home = tmp_path_factory.mktemp("corral-home")
    os.environ["CORRAL_HOME"] = str(home)
    os.environ["CORRAL_NUM_GPUS"] = "1"  # a logical GPU: tests GPU placement and the CPU fallback
    os.environ.setdefault("CORRAL_DEPLOY_TIMEOUT_S", "240")
    os.environ["CORRAL_ASSAY_TICK_S"] = "1"  # assay windows of a second in tests
    os.environ["CORRAL_EXPLAINER_IDLE_S"] = "10"  # the scale-to-zero test waits for it
    return home


@pytest.fixture(scope="session")
def corral(corral_home: Path) -> Iterator[Any]:
    from cluster import lifecycle
    from cluster.settings import CorralSettings

    settings = CorralSettings()
    lifecycle.down(settings, say=lambda _: None)  # a cluster left over from an aborted run
    lifecycle.up(settings, say=print)
    yield settings
    lifecycle.down(CorralSettings(), say=print)


@pytest.fixture(scope="session")
def admin(corral: Any) -> Any:
    from cluster.sdk import Client

    return Client(corral.base_url)


@pytest.fixture(scope="session")
def http(corral: Any) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=corral.base_url, timeout=120) as client:
        yield client


@pytest.fixture(scope="session")
def admin_headers(corral: Any) -> dict[str, str]:
    return {"authorization": f"Bearer {corral.admin_token_path.read_text().strip()}"}


@pytest.fixture(scope="session")
def fraud_model() -> dict[str, Any]:
    train = make_transactions(4000, seed=3)
    model, mean, std = train_fraud_model(train, kind="logreg")
    return {"model": model, "mean": mean, "std": std}


@pytest.fixture(scope="session")
def fraud_pipeline(admin: Any, fraud_model: dict[str, Any]) -> dict[str, Any]:
    """The demo pipeline deployed once in workspace `default` as `fraud` for the modules that share it."""
    info = admin.upload_model("fraud", fraud_model["model"], n_features=len(FEATURES))
    spec = fraud_pipeline_spec(f"fraud:{info['version']}", fraud_model["mean"], fraud_model["std"])
    pipeline = admin.pipeline("fraud", spec)
    pipeline.deploy()
    return {"model": info, "spec": spec, "pipeline": pipeline}


@pytest.fixture(scope="session")
def postgres() -> Iterator[Any]:
    """A real PostgreSQL server for the whole run (tests/postgres.py), started only if a test asks for it."""
    from tests.postgres import running_postgres

    with running_postgres() as server:
        yield server


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty registry database on each backend: a SQLite file, or a fresh database on `postgres`."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'corral.db'}"
        return
    with request.getfixturevalue("postgres").database() as url:
        yield url
