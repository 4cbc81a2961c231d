"""Inference logs on a real cluster: every reply is logged with the contract's columns, shadows included."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import pyarrow as pa
import pytest

from tests.integration.helpers import SHADOW_STEPS, fan_out, model_step, scale_model, upload

pytestmark = pytest.mark.integration
RECORDS = {"content-type": "application/json; format=pandas-records"}
LOGS = "/api/v1/workspaces/default/pipelines/{}/logs"


@pytest.fixture(scope="module")
def logged(admin: Any, tmp_path_factory: pytest.TempPathFactory) -> Any:
    """`logged`: y = 3x as the primary; shadows `double` (y = 2x) and `broken` (always raises)."""
    tmp = Path(tmp_path_factory.mktemp("log-models"))
    three = upload(admin, "triple", scale_model(3.0), tmp)
    two = upload(admin, "double", scale_model(2.0), tmp)
    code_path = tmp / "shadow_steps.py"
    code_path.write_text(SHADOW_STEPS)
    code = admin.upload_code("log-shadow-steps", code_path)
    boom = {
        "name": "s",
        "python": "shadow_steps:Boom",
        "code": f"log-shadow-steps:{code['version']}",
        "resources": {"num_cpus": 0.1},
    }
    spec = {
        "variants": {
            "main": {"steps": [model_step(three)]},
            "double": {"steps": [model_step(two)]},
            "broken": {"steps": [boom]},
        },
        "traffic": {"weights": {"main": 1}, "shadows": []},
    }
    pipeline = admin.pipeline("logged", spec)
    pipeline.deploy()
    yield pipeline
    pipeline.undeploy()


def _infer(http: httpx.Client, headers: dict[str, str], x: float) -> tuple[str, float]:
    reply = http.post("/ws/default/v2/models/logged/infer", json=[{"x": x}], headers={**headers, **RECORDS})
    assert reply.status_code == 200, reply.text
    return reply.headers["x-corral-request-id"], reply.json()[0]["y"]


def _logs_until(pipeline: Any, expected: int, since: datetime, timeout_s: float = 30) -> tuple[pd.DataFrame, float]:
    """Poll the logs until `expected` rows are there; returns them and how long it took."""
    started = time.monotonic()
    while True:
        frame = pipeline.logs(start=since, limit=100_000)
        if len(frame) >= expected or time.monotonic() - started > timeout_s:
            return frame, time.monotonic() - started
        time.sleep(0.2)


@pytest.mark.slow
def test_five_thousand_requests_are_all_logged_with_correct_columns(
    logged: Any, http: httpx.Client, admin_headers: dict[str, str]
) -> None:
    since = datetime.now(UTC) - timedelta(seconds=1)
    xs = [float(i) for i in range(5000)]
    replies = fan_out(lambda x: _infer(http, admin_headers, x), xs, workers=8)
    frame, waited = _logs_until(logged, 5000, since)
    print(f"last of 5,000 replies was in the logs {waited:.2f} s after it returned")
    assert len(frame) == 5000
    assert set(frame.request_id) == {request_id for request_id, _ in replies}
    by_id = frame.set_index("request_id")
    for (request_id, y), x in zip(replies, xs, strict=True):
        assert by_id.at[request_id, "in.x"] == x
        assert by_id.at[request_id, "out.y"] == pytest.approx(y)  # an [N, 1] output is one value per row
    assert (frame.variant == "main").all()
    assert (frame.pipeline_version == logged.status()["version"]).all()
    assert (frame.latency_ms > 0).all() and (frame["anomaly.count"] == 0).all()
    assert frame.time.is_monotonic_increasing
    assert frame.time.iloc[0].utcoffset() == timedelta(0)


def test_shadow_outputs_and_errors_are_logged_next_to_the_primary(
    logged: Any, http: httpx.Client, admin_headers: dict[str, str]
) -> None:
    logged.set_traffic({"main": 1}, shadows=["double", "broken"])
    since = datetime.now(UTC)
    replies = [_infer(http, admin_headers, float(x)) for x in (1, 2, 3)]
    ids = [request_id for request_id, _ in replies]

    def shadows_logged() -> pd.DataFrame:
        deadline = time.monotonic() + 30
        while True:
            frame = logged.logs(start=since, limit=100)
            frame = frame[frame.request_id.isin(ids)]
            ready = "shadow.double.out.y" in frame and "shadow.broken.error" in frame
            done = ready and frame["shadow.double.out.y"].notna().all() and frame["shadow.broken.error"].notna().all()
            if done or time.monotonic() > deadline:
                return frame.set_index("request_id").loc[ids]
            time.sleep(0.2)

    frame = shadows_logged()
    assert frame["out.y"].tolist() == [3.0, 6.0, 9.0]
    assert frame["shadow.double.out.y"].tolist() == [2.0, 4.0, 6.0]
    assert frame["shadow.double.error"].isna().all()
    assert all("exploded" in error for error in frame["shadow.broken.error"])
    assert "shadow.broken.out.y" not in frame  # a shadow that only failed has no outputs
    logged.set_traffic({"main": 1}, shadows=[])


def test_logs_as_arrow_and_json_agree(logged: Any, http: httpx.Client, admin_headers: dict[str, str]) -> None:
    request_id, _ = _infer(http, admin_headers, 42.0)
    deadline = time.monotonic() + 30
    while request_id not in set(logged.logs(limit=50).request_id) and time.monotonic() < deadline:
        time.sleep(0.2)
    # A fixed, past range: rows that arrive later cannot change the answer between the two queries.
    end = datetime.now(UTC)
    params = {"limit": 5, "start": (end - timedelta(hours=1)).isoformat(), "end": end.isoformat()}
    path = LOGS.format("logged")
    arrow = http.get(path, params=params, headers={**admin_headers, "accept": "application/vnd.apache.arrow.file"})
    assert arrow.status_code == 200 and arrow.headers["content-type"] == "application/vnd.apache.arrow.file"
    table = pa.ipc.open_file(arrow.content).read_all()
    rows = http.get(path, params=params, headers=admin_headers).json()["rows"]
    assert table.num_rows == len(rows) == 5
    assert table.column("request_id").to_pylist() == [r["request_id"] for r in rows]
    assert rows[-1]["request_id"] == request_id and rows[-1]["time"].endswith("Z")


@pytest.mark.parametrize(
    ("params", "status", "fragment"),
    [
        ({"start": "yesterday"}, 422, "not an ISO 8601 time"),
        ({"start": "2026-11-23T10:00:00Z", "end": "2026-11-23T09:00:00Z"}, 422, "must be before end"),
        ({"limit": 0}, 422, "limit=0 is out of range"),
        ({"limit": "many"}, 422, "limit"),
    ],
)
def test_bad_log_queries_are_4xx(
    logged: Any, http: httpx.Client, admin_headers: dict[str, str], params: dict[str, Any], status: int, fragment: str
) -> None:
    reply = http.get(LOGS.format("logged"), params=params, headers=admin_headers)
    assert reply.status_code == status, reply.text
    assert fragment in reply.json()["error"]


def test_logs_of_unknown_or_foreign_pipelines_are_404(
    logged: Any, admin: Any, http: httpx.Client, admin_headers: dict[str, str]
) -> None:
    assert http.get(LOGS.format("nope"), headers=admin_headers).status_code == 404
    admin.create_workspace("log-outsiders")
    outsider = admin.create_token("viewer", workspace="log-outsiders")
    reply = http.get(LOGS.format("logged"), headers={"authorization": f"Bearer {outsider}"})
    assert reply.status_code == 404, reply.text
    viewer = admin.create_token("viewer")
    assert http.get(LOGS.format("logged"), headers={"authorization": f"Bearer {viewer}"}).status_code == 200
