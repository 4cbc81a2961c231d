"""Corral's own step and codec time per request, in-process: no server, no Ray.

The demo pipeline (StandardScale -> OnnxModelStep -> Threshold, pandas records JSON both ways) run
stage by stage on the same body, next to the hand-written numpy + onnxruntime peer
(benchmarks.peer). Also the whole router core (HttpEdge.handle: auth cache hit, admission, decode,
traffic pick, the inline segment, log record, encode, headers), so what Corral adds around the
steps shows too. Median microseconds per call over many calls, so one noisy spell does not count.

    python -m benchmarks.inprocess [--rows 1 1000] [--calls 2000] [--json out.json]
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import hashlib
import json
import statistics
import tempfile
import time
from collections.abc import Callable
from typing import Any

import orjson

from benchmarks.fraud_steps import FraudSteps, step_configs
from benchmarks.peer import FraudModel, records_infer
from examples.fraud import FEATURES, fraud_pipeline_spec, make_transactions, train_fraud_model
from pipelines.codecs.records import decode_records, encode_records
from pipelines.frame import Frame
from pipelines.live_config import RouterConfig
from pipelines.spec import TrafficSpec
from pipelines.step import run_step_sync
from serving.admission import Admission
from serving.auth import AuthCache
from serving.dataplane import DataPlane
from serving.http import HttpEdge
from serving.segments import InlineSegment

PREFIX = "/ws/w/v2/models/fraud"
TOKEN = "bench-token"


def median_us(fn: Callable[[], Any], calls: int) -> float:
    """Median of `calls` timings, each of a batch of 10 calls (timer overhead out of the figure)."""
    for _ in range(min(200, calls)):
        fn()
    samples = []
    for _ in range(max(1, calls // 10)):
        started = time.perf_counter()
        for _ in range(10):
            fn()
        samples.append((time.perf_counter() - started) / 10 * 1e6)
    return statistics.median(samples)


def median_async_us(make: Callable[[], Any], calls: int) -> float:
    async def run() -> float:
        for _ in range(min(200, calls)):
            await make()
        samples = []
        for _ in range(max(1, calls // 10)):
            started = time.perf_counter()
            for _ in range(10):
                await make()
            samples.append((time.perf_counter() - started) / 10 * 1e6)
        return statistics.median(samples)

    return asyncio.run(run())


def build_edge(steps: FraudSteps, *, frames: bool = True) -> HttpEdge:
    """The router's core as PipelineRouter builds it, with the control app's token check and the
    log sink replaced by in-process stand-ins (a set of hashes, a list)."""
    records: list[Any] = []
    segment = InlineSegment([("pre", steps.scale), ("model", steps.model), ("post", steps.threshold)])
    plane = DataPlane("fraud", {"main": [segment]}, log=lambda r: records.append(r) if len(records) < 1 else None)
    probe = hashlib.sha256(b"probe").hexdigest()
    plane.apply(RouterConfig(version=1, traffic=TrafficSpec(weights={"main": 1}), probe_hash=probe, config_id="c"))
    allowed = hashlib.sha256(TOKEN.encode()).hexdigest()

    async def verify(token_hash: str) -> None:
        if token_hash != allowed:
            raise PermissionError("bad token")

    admission = Admission(max_queued_requests=256, max_queue_delay_s=1.0, default_timeout_s=60.0)
    return HttpEdge(
        plane, AuthCache(verify), prefix=PREFIX, max_payload_bytes=64 << 20, admission=admission, frames=frames
    )


def measure(rows: int, calls: int) -> dict[str, dict[str, float]]:
    train = make_transactions(4000, seed=3)
    model, mean, std = train_fraud_model(train, kind="logreg")
    from cluster.convert import to_onnx

    onnx = to_onnx(model, n_features=len(FEATURES))
    spec = fraud_pipeline_spec("fraud:1", mean, std)
    steps = FraudSteps.from_spec(onnx, spec)
    with tempfile.NamedTemporaryFile(suffix=".onnx") as file:
        file.write(onnx)
        file.flush()
        peer = FraudModel(file.name, **_peer_params(spec))
    body = orjson.dumps(make_transactions(rows, seed=5)[FEATURES].to_dict(orient="records"))

    table = decode_records(body, frames=False).table
    frame = decode_records(body).data
    if not isinstance(frame, Frame):
        raise RuntimeError("the demo body did not decode to a Frame")
    n = max(10, calls // max(1, rows // 10))
    result: dict[str, dict[str, float]] = {"table path": {}, "fast path": {}}
    for path, data, frames in (("table path", table, False), ("fast path", frame, True)):
        stages = result[path]
        stages["decode"] = median_us(lambda frames=frames: decode_records(body, frames=frames), n)  # type: ignore[misc]
        chain = (("StandardScale", steps.scale), ("OnnxModelStep", steps.model), ("Threshold", steps.threshold))
        for name, step in chain:
            run = functools.partial(run_step_sync, step, data, step_name=name)
            stages[name] = median_us(run, n)
            data = run()
        stages["encode"] = median_us(lambda data=data: encode_records(data), n)  # type: ignore[misc]
        stages["steps+codecs"] = sum(stages.values())
        edge = build_edge(steps, frames=frames)
        headers = {"content-type": "application/json; format=pandas-records", "authorization": f"Bearer {TOKEN}"}
        status = asyncio.run(edge.handle("POST", PREFIX + "/infer", headers, body))[0]
        if status != 200:
            raise RuntimeError(f"the router core answered {status}")
        stages["router core (HttpEdge.handle)"] = median_async_us(
            lambda edge=edge, headers=headers: edge.handle("POST", PREFIX + "/infer", headers, body), n  # type: ignore[misc]
        )
    result["peer"] = {"numpy + onnxruntime": median_us(lambda: records_infer(peer, body), n)}
    return result


def _peer_params(spec: dict[str, Any]) -> dict[str, Any]:
    configs = step_configs(spec)
    return {"mean": configs["scale"]["mean"], "std": configs["scale"]["std"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, nargs="+", default=[1, 1000])
    parser.add_argument("--calls", type=int, default=3000)
    parser.add_argument("--json", help="write the figures here")
    args = parser.parse_args()
    figures = {str(rows): measure(rows, args.calls) for rows in args.rows}
    first = next(iter(figures.values()))
    columns = [(rows, path) for rows in figures for path in ("table path", "fast path")]
    print(f"{'median us per call':32}" + "".join(f"{rows + ' row(s), ' + path:>26}" for rows, path in columns))
    for stage in first["table path"]:
        print(f"{stage:32}" + "".join(f"{figures[rows][path][stage]:26.1f}" for rows, path in columns))
    print(f"{'peer (numpy + onnxruntime)':32}" + "".join(
        f"{figures[rows]['peer']['numpy + onnxruntime']:26.1f}" for rows, _ in columns))
    if args.json:
        with open(args.json, "w") as out:
            json.dump(figures, out, indent=2)


if __name__ == "__main__":
    main()
