"""Drift assays over real logged traffic: a shifted feature alerts, an unshifted one stays ok."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import orjson
import pytest

from tests.integration.helpers import scale_model, upload

pytestmark = [pytest.mark.integration, pytest.mark.slow]
RECORDS = {"content-type": "application/json; format=pandas-records"}
ASSAYS = "/api/v1/workspaces/default/assays"
PHASE_S = 4.0


class Hook(BaseHTTPRequestHandler):
    received: list[dict[str, Any]] = []

    def do_POST(self) -> None:
        Hook.received.append(orjson.loads(self.rfile.read(int(self.headers["content-length"]))))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *_: Any) -> None:
        pass


@pytest.fixture(scope="module")
def webhook() -> Any:
    server = HTTPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}/alerts"
    server.shutdown()


@pytest.fixture(scope="module")
def traffic(
    admin: Any, http: httpx.Client, admin_headers: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Any:
    """Pipeline `drifty` gets PHASE_S seconds of a, b ~ N(0, 1), then PHASE_S of a ~ N(3, 1), b unchanged."""
    model = upload(admin, "pair", scale_model(1.0, width=2), Path(tmp_path_factory.mktemp("assay-models")))
    step = {"name": "model", "model": model, "columns": ["a", "b"], "resources": {"num_cpus": 0.1}}
    pipeline = admin.pipeline("drifty", {"steps": [step]})
    pipeline.deploy()
    rng = np.random.default_rng(5)
    url = "/ws/default/v2/models/drifty/infer"
    started = datetime.now(UTC)
    for shift in (0.0, 3.0):
        phase_end = time.monotonic() + PHASE_S
        while time.monotonic() < phase_end:
            body = [{"a": float(rng.normal(shift)), "b": float(rng.normal())} for _ in range(50)]
            assert http.post(url, json=body, headers={**admin_headers, **RECORDS}).status_code == 200
            time.sleep(0.02)
        if shift == 0.0:
            middle = datetime.now(UTC)
    ended = datetime.now(UTC)
    time.sleep(1.0)  # log rows are in the store within a second
    yield {"start": started, "middle": middle, "end": ended}
    pipeline.undeploy()


def _spec(target: str, **extra: Any) -> dict[str, Any]:
    baseline = np.random.default_rng(9).normal(size=3000).round(4).tolist()
    return {
        "pipeline": "drifty",
        "target": target,
        "baseline": {"values": baseline},
        "window": {"width": "1s", "interval": "1s"},
        "metric": "psi",
        "bins": {"mode": "quantile", "count": 5},
        "thresholds": {"warning": 0.1, "alert": 0.25},
        **extra,
    }


def _full_windows(results: list[dict[str, Any]], start: datetime, end: datetime) -> list[dict[str, Any]]:
    """Windows wholly inside [start, end) with enough rows to judge (the edges of a phase are mixed)."""
    return [
        r
        for r in results
        if datetime.fromisoformat(r["window_start"]) >= start
        and datetime.fromisoformat(r["window_end"]) <= end
        and r["rows"] >= 100
    ]


def test_preview_shifted_feature_alerts_after_the_shift_and_unshifted_stays_ok(
    traffic: dict[str, datetime], http: httpx.Client, admin_headers: dict[str, str]
) -> None:
    window = {"start": traffic["start"].isoformat(), "end": (traffic["end"] + timedelta(seconds=1)).isoformat()}
    for name, target in (("shift-a", "in.a"), ("steady-b", "in.b")):
        reply = http.put(f"{ASSAYS}/{name}", json=_spec(target, active=False), headers=admin_headers)
        assert reply.status_code == 201, reply.text
    shifted = http.post(f"{ASSAYS}/shift-a/preview", json=window, headers=admin_headers).json()
    steady = http.post(f"{ASSAYS}/steady-b/preview", json=window, headers=admin_headers).json()
    before = _full_windows(shifted, traffic["start"], traffic["middle"])
    after = _full_windows(shifted, traffic["middle"], traffic["end"])
    assert len(before) >= 2 and len(after) >= 2, shifted
    assert [r["status"] for r in before] == ["ok"] * len(before), before
    assert [r["status"] for r in after] == ["alert"] * len(after), after
    assert all(r["score"] > 0.25 for r in after)
    steady_full = _full_windows(steady, traffic["start"], traffic["end"])
    assert len(steady_full) >= 4 and {r["status"] for r in steady_full} == {"ok"}, steady_full
    assert all(len(r["bin_scores"]) == 7 for r in steady_full)  # 5 quantile bins + 2 outlier bins
    # A preview stores nothing: the paused assays have no results.
    assert http.get(f"{ASSAYS}/shift-a/results", headers=admin_headers).json() == []
    chart = http.get(f"{ASSAYS}/shift-a/chart", params={"preview": "true", **window}, headers=admin_headers)
    assert chart.status_code == 200 and chart.content.startswith(b"\x89PNG")


def test_scheduler_stores_windows_and_posts_one_webhook_per_alert(
    traffic: dict[str, datetime], http: httpx.Client, admin_headers: dict[str, str], webhook: str
) -> None:
    start = traffic["start"].isoformat()
    specs = {
        "sched-a": _spec("in.a", window={"width": "1s", "interval": "1s", "start": start}, alert_webhook=webhook),
        "sched-dead-hook": _spec(
            "in.a", window={"width": "1s", "interval": "1s", "start": start}, alert_webhook="http://127.0.0.1:9/x"
        ),
        "sched-paused": _spec("in.a", window={"width": "1s", "interval": "1s", "start": start}, active=False),
    }
    Hook.received.clear()
    for name, spec in specs.items():
        assert http.put(f"{ASSAYS}/{name}", json=spec, headers=admin_headers).status_code == 201
    needed = traffic["end"] - timedelta(seconds=1)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        stored = {n: http.get(f"{ASSAYS}/{n}/results", headers=admin_headers).json() for n in specs}
        ready = all(
            stored[n] and datetime.fromisoformat(stored[n][-1]["window_end"]) >= needed
            for n in specs
            if n != "sched-paused"
        )
        if ready:
            break
        time.sleep(1)
    assert stored["sched-a"] and stored["sched-dead-hook"], stored  # an unreachable webhook stops nothing
    assert stored["sched-paused"] == []  # a paused assay does not run
    after = _full_windows(stored["sched-a"], traffic["middle"], traffic["end"])
    assert after and {r["status"] for r in after} == {"alert"}
    time.sleep(2)  # webhook POSTs go out right after their windows are stored
    alerts = [r for r in http.get(f"{ASSAYS}/sched-a/results", headers=admin_headers).json() if r["status"] == "alert"]
    posted = [p for p in Hook.received if p["assay"] == "sched-a"]
    assert sorted(p["window_start"] for p in posted) == sorted(r["window_start"] for r in alerts)
    assert all(p["status"] == "alert" and p["pipeline"] == "drifty" and p["score"] > 0.25 for p in posted)


def test_assay_gauges_reach_prometheus(
    traffic: dict[str, datetime], corral: Any, http: httpx.Client, admin_headers: dict[str, str]
) -> None:
    """After the scheduler test: sched-a's last judged window is in the shifted phase, so it is in alert."""
    alerts = [r for r in http.get(f"{ASSAYS}/sched-a/results", headers=admin_headers).json() if r["status"] == "alert"]
    assert alerts
    deadline = time.monotonic() + 90
    while True:
        text = httpx.get(f"http://127.0.0.1:{corral.metrics_port}/metrics", timeout=10).text
        found = {name: _sample(text, name, assay="sched-a", pipeline="drifty", workspace="default") for name in (
            "ray_corral_assay_status", "ray_corral_assay_score", "ray_corral_assay_alerts_total"
        )}  # fmt: skip
        if found["ray_corral_assay_alerts_total"] == len(alerts) or time.monotonic() > deadline:
            break
        time.sleep(2)
    assert found["ray_corral_assay_status"] == 2.0  # 0 ok, 1 warning, 2 alert
    assert found["ray_corral_assay_score"] is not None and found["ray_corral_assay_score"] > 0.25
    assert found["ray_corral_assay_alerts_total"] == len(alerts)


def _sample(text: str, metric: str, **labels: str) -> float | None:
    for line in text.splitlines():
        if line.startswith(metric + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return None


@pytest.mark.parametrize(
    ("change", "fragment"),
    [
        ({"target": "in.zzz"}, "in.zzz"),
        ({"baseline": {"values": []}}, "baseline"),
        ({"baseline": {"start": "2001-01-01T00:00:00Z", "end": "2001-01-02T00:00:00Z"}}, "empty baseline"),
        ({"window": {"width": "0s"}}, "must be positive"),
        ({"metric": "kl"}, "metric"),
        ({"thresholds": {"warning": 0.5, "alert": 0.1}}, "warning"),
        ({"surprise": 1}, "surprise"),
    ],
)
def test_bad_assays_are_422_and_store_nothing(
    traffic: dict[str, datetime],
    http: httpx.Client,
    admin_headers: dict[str, str],
    change: dict[str, Any],
    fragment: str,
) -> None:
    reply = http.put(f"{ASSAYS}/never-stored", json={**_spec("in.a"), **change}, headers=admin_headers)
    assert reply.status_code == 422, reply.text
    assert fragment in reply.json()["error"]
    assert http.get(f"{ASSAYS}/never-stored", headers=admin_headers).status_code == 404


def test_assay_on_unknown_pipeline_is_404(
    traffic: dict[str, datetime], http: httpx.Client, admin_headers: dict[str, str]
) -> None:
    reply = http.put(f"{ASSAYS}/orphan", json={**_spec("in.a"), "pipeline": "ghost"}, headers=admin_headers)
    assert reply.status_code == 404, reply.text
