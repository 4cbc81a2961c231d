"""Core benchmark: the fraud workload on the hand-written peer and on Corral, side by side in one run.

    python -m benchmarks.core [--seconds 10] [--skip-corral]

Trains the demo model, starts the peer (benchmarks.peer) on 127.0.0.1:18001 and, unless
--skip-corral, deploys pipeline `bench-fraud` on the Corral already running at --corral-url. Each
workload is warmed up, then measured for --seconds on the peer and on Corral in turn. Prints the
table and writes bench-results/core.json; the bench pipeline is undeployed at the end.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import sys
import tempfile
import time
import timeit
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from benchmarks import load, payloads, report, systems
from benchmarks.peer import FraudModel
from cluster.convert import to_onnx
from examples.fraud import FEATURES, make_transactions, train_fraud_model


@dataclass(frozen=True)
class Workload:
    name: str
    fmt: str  # "records" (pandas records JSON) or "arrow" (Arrow IPC stream)
    rows: int
    concurrency: int


def workloads(batch_concurrency: int) -> list[Workload]:
    c = batch_concurrency
    return [
        Workload("1 row, records, c=1", "records", 1, 1),
        Workload("1 row, records, c=16", "records", 1, 16),
        Workload(f"1,000 rows, records, c={c}", "records", 1_000, c),
        Workload(f"10,000 rows, arrow, c={c}", "arrow", 10_000, c),
    ]


def measure(system: systems.System, work: Workload, body: bytes, seconds: float, warmup: float) -> dict[str, Any]:
    """Warm up, then run `work` for `seconds`; adds the server's CPU use when it is a local process."""
    target = load.Target(system.url, body, system.headers[work.fmt], rows=work.rows)
    load.run(target, work.concurrency, seconds=warmup)
    cpu_before = systems.cpu_seconds(system.pid)
    result = load.run(target, work.concurrency, seconds=seconds).as_dict()
    cpu_after = systems.cpu_seconds(system.pid)
    if cpu_before is not None and cpu_after is not None and result["seconds"] > 0:
        result["server_cpu_pct"] = round(100 * (cpu_after - cpu_before) / result["seconds"], 1)
    return result


def check(system: systems.System, work: Workload, model: FraudModel) -> str:
    """Send a small request of the workload's format once and compare with the in-process model."""
    sample = payloads.rows(min(work.rows, 50), seed=7)
    body = payloads.records_body(sample) if work.fmt == "records" else payloads.arrow_body(sample)
    try:
        reply = httpx.post(system.url, content=body, headers=system.headers[work.fmt], timeout=30)
    except httpx.HTTPError as exc:
        return f"request failed: {exc}"
    return payloads.check_reply(work.fmt, reply.status_code, reply.content, sample, model)


def calibrate(model: FraudModel) -> dict[str, float]:
    """How fast this machine is right now, to compare runs: onnxruntime call and a Python loop."""
    x = np.zeros((1, len(FEATURES)))
    ort_s = min(timeit.repeat(lambda: model(x), number=2_000, repeat=3)) / 2_000
    loop_s = min(timeit.repeat("sum(range(10_000))", number=200, repeat=3)) / 200
    return {
        "fraud_model_single_row_us": round(ort_s * 1e6, 2),
        "python_sum_range_10k_us": round(loop_s * 1e6, 1),
    }


def generator_ceiling(workdir: Path, port: int, seconds: float) -> dict[str, dict[str, Any]]:
    """The load generator against a trivial server: what it can drive at all on this machine."""
    cmd = [sys.executable, "-m", "benchmarks.echo", "--port", str(port)]
    body = payloads.records_body(payloads.rows(1))
    target = load.Target(f"http://127.0.0.1:{port}/infer", body, {"content-type": "application/json"})
    with systems.local_server(cmd, port, workdir / "echo.log"):
        return {f"c={c}": load.run(target, c, seconds=seconds).as_dict() for c in (1, 16)}


def run(args: argparse.Namespace) -> dict[str, Any]:
    print("training and converting the fraud model...", flush=True)
    model_obj, mean, std = train_fraud_model(make_transactions(20_000, seed=0), "logreg")
    onnx = to_onnx(model_obj, n_features=len(FEATURES))
    works = workloads(args.batch_concurrency)
    warmup = min(2.0, max(0.5, args.seconds / 5))
    out: dict[str, Any] = {
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "loadavg_start": os.getloadavg(),
        },
        "settings": {
            "seconds": args.seconds,
            "warmup_s": warmup,
            "corral_url": None if args.skip_corral else args.corral_url,
        },
        "workloads": [],
    }
    with tempfile.TemporaryDirectory(prefix="corral-bench-") as tmp, contextlib.ExitStack() as stack:
        workdir = Path(tmp)
        model_path = workdir / "model.onnx"
        model_path.write_bytes(onnx)
        local_model = FraudModel(model_path, mean, std)
        out["machine"].update(calibrate(local_model))
        print("measuring the load generator's ceiling...", flush=True)
        out["load_generator_ceiling"] = generator_ceiling(workdir, args.echo_port, min(args.seconds, 3))
        peer = stack.enter_context(systems.peer(workdir, onnx, mean, std, args.peer_port))
        corral = None
        if not args.skip_corral:
            print(f"deploying {systems.PIPELINE} on Corral at {args.corral_url}...", flush=True)
            corral = stack.enter_context(systems.corral(args.corral_url, onnx, mean, std))
            out["corral"] = corral.notes
        for work in works:
            df = payloads.rows(work.rows)
            body = payloads.records_body(df) if work.fmt == "records" else payloads.arrow_body(df)
            entry: dict[str, Any] = {"workload": work.name, **asdict(work), "body_bytes": len(body)}
            for system in (peer, corral):
                if system is None:
                    entry["corral"] = None
                    continue
                print(f"  {work.name}: {system.name}...", flush=True)
                verdict = check(system, work, local_model)
                entry[system.name] = {**measure(system, work, body, args.seconds, warmup), "check": verdict}
            entry["ratio"] = report.ratios(entry["peer"], entry["corral"])
            out["workloads"].append(entry)
    out["machine"]["loadavg_end"] = os.getloadavg()
    return out


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=10.0, help="measured seconds per workload and system")
    parser.add_argument("--skip-corral", action="store_true", help="measure the peer only")
    parser.add_argument("--corral-url", default="http://127.0.0.1:8000")
    parser.add_argument("--peer-port", type=int, default=18001)
    parser.add_argument("--echo-port", type=int, default=18002, help="trivial server for the generator ceiling")
    parser.add_argument("--batch-concurrency", type=int, default=2, help="in-flight requests for batch workloads")
    parser.add_argument("--out", type=Path, default=systems.REPO / "bench-results" / "core.json")
    args = parser.parse_args(argv)
    if not 0 < args.seconds <= 300:
        parser.error("--seconds must be in (0, 300]")
    results = run(args)
    print()
    print(report.table(results["workloads"]))
    ceiling = results["load_generator_ceiling"]
    print(
        "load generator ceiling (trivial server): "
        + ", ".join(f"{k} {v['req_per_s']:,.0f} req/s" for k, v in ceiling.items())
    )
    print(f"machine: {results['machine']}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"results written to {args.out}")


if __name__ == "__main__":
    main()
