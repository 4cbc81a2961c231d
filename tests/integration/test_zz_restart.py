"""Runs last: `corral down` then `corral up` brings deployed pipelines back (the store is the truth)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from examples.fraud import FEATURES

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_pipeline_comes_back_deployed_after_restart(
    corral, fraud_pipeline, admin, http, admin_headers
) -> None:
    from cluster import lifecycle

    admin.pipeline("fraud").set_traffic({"main": 3})  # live traffic, not the spec's: must survive too
    before = admin.pipeline("fraud").status()
    assert before["traffic"]["weights"] == {"main": 3.0}
    assert before["status"] == "running"
    again = lifecycle.up(corral, say=print)
    assert again.already_running  # `corral up` on a running Corral is a no-op that says so
    since = datetime.now(UTC) - timedelta(hours=1)
    logged_before = admin.pipeline("fraud").logs(start=since, limit=1_000_000)
    # Replies returned just before `down` are still in routers' log buffers: down must flush them.
    sent = [_infer(http, admin_headers) for _ in range(100)]
    lifecycle.down(corral, say=print)
    result = lifecycle.up(corral, say=print)
    assert not result.already_running
    restored = {(r["workspace"], r["name"]): r["status"] for r in result.restored}
    assert restored[("default", "fraud")] == "running"
    after = admin.pipeline("fraud").status()
    assert after["status"] == "running" and after["version"] == before["version"]
    assert after["traffic"] == before["traffic"]
    _infer(http, admin_headers)
    logged_after = admin.pipeline("fraud").logs(start=since, limit=1_000_000)
    assert set(sent) <= set(logged_after.request_id), "rows answered before `corral down` were lost"
    assert set(logged_before.get("request_id", [])) <= set(logged_after.request_id)


def _infer(http: Any, admin_headers: dict[str, str]) -> str:
    reply = http.post(
        "/ws/default/v2/models/fraud/infer",
        json=[{c: 1.0 for c in FEATURES}],
        headers={**admin_headers, "content-type": "application/json; format=pandas-records"},
    )
    assert reply.status_code == 200, reply.text
    return str(reply.headers["x-corral-request-id"])
