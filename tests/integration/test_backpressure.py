"""Backpressure and deadlines on a real cluster: a full router queue answers 503 + Retry-After at
once, a request past its deadline a 504, a bad X-Corral-Timeout-Ms a 400; the replica keeps serving."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.integration.helpers import SHADOW_STEPS, upload_code

pytestmark = pytest.mark.integration
URL = "/ws/default/v2/models/slow/infer"
RECORDS = {"content-type": "application/json; format=pandas-records"}


@pytest.fixture(scope="module")
def slow(admin: Any, tmp_path_factory: pytest.TempPathFactory) -> Any:
    code = upload_code(admin, "slow-steps", "shadow_steps", SHADOW_STEPS, Path(tmp_path_factory.mktemp("slow")))
    spec = {
        "steps": [{"name": "nap", "python": "shadow_steps:Slow", "code": code, "config": {"seconds": 1.5}}],
        "router": {"max_queued_requests": 2, "autoscaling": {"min_replicas": 1, "max_replicas": 1}},
    }
    pipeline = admin.pipeline("slow", spec)
    pipeline.deploy()
    yield pipeline
    pipeline.undeploy()


def post(corral: Any, headers: dict[str, str], **extra: str) -> tuple[httpx.Response, float]:
    started = time.perf_counter()
    with httpx.Client(base_url=corral.base_url, timeout=60) as http:
        reply = http.post(URL, content=b'[{"x": 1.0}]', headers={**headers, **RECORDS, **extra})
    return reply, time.perf_counter() - started


def test_a_full_queue_answers_503_with_retry_after_at_once(
    slow: Any, corral: Any, admin_headers: dict[str, str]
) -> None:
    with ThreadPoolExecutor(6) as pool:
        replies = list(pool.map(lambda _: post(corral, admin_headers), range(6)))
    ok = [r for r, _ in replies if r.status_code == 200]
    refused = [(r, s) for r, s in replies if r.status_code == 503]
    assert len(ok) >= 1 and len(ok) + len(refused) == 6, [r.status_code for r, _ in replies]
    assert len(refused) >= 3  # 2 places in the one replica: the rest are turned away
    for reply, seconds in refused:
        assert reply.headers["retry-after"] == "1"
        assert "router.max_queued_requests" in reply.json()["error"]
        assert seconds < 1.0  # refused at once, not after the 1.5 s the admitted ones take
    reply, _ = post(corral, admin_headers)
    assert reply.status_code == 200  # the replica serves on


def test_a_request_past_its_deadline_is_a_504_and_bad_deadlines_a_400(
    slow: Any, corral: Any, admin_headers: dict[str, str]
) -> None:
    reply, seconds = post(corral, admin_headers, **{"X-Corral-Timeout-Ms": "300"})
    assert reply.status_code == 504, reply.text
    assert "deadline of 300 ms" in reply.json()["error"]
    assert seconds < 1.4
    reply, _ = post(corral, admin_headers, **{"X-Corral-Timeout-Ms": "soon"})
    assert reply.status_code == 400
    assert "X-Corral-Timeout-Ms must be a whole number of milliseconds" in reply.json()["error"]
    reply, _ = post(corral, admin_headers, **{"X-Corral-Timeout-Ms": "5000"})
    assert reply.status_code == 200, reply.text
