"""Core benchmark: the fraud workload on the hand-written peer, Corral and bare Ray Serve, side by side in one run.

    python -m benchmarks.core [--seconds 10] [--systems peer,corral-auto,corral-own,bare-serve]
                              [--client wrk|builtin] [--skip-corral]

Systems, measured in turn (each is brought up, checked, measured on every workload, then taken down):
  peer         hand-written FastAPI + uvicorn + onnxruntime in one process (benchmarks.peer), on
               127.0.0.1:--peer-port
  corral-auto  the demo pipeline deployed through Corral's SDK as `bench-auto`, steps `placement: auto`
  corral-own   the same as `bench-own`, every step `placement: own` (a deployment each, called by handle)
  bare-serve   the same three steps in one bare Ray Serve ingress (benchmarks.bare_serve), app
               `bench-bare`: Ray Serve's limit, to tell Corral's own per-request cost from Serve's
  bare-chain   the same three steps as three bare Serve deployments chained by handles
               (benchmarks.bare_chain): Ray Serve's limit for Corral's `own` placement
The Corral and bare systems need Corral up (`corral up`) at --corral-url, on this machine.

Workloads: 1 row at c=1 and c=16, 1,000-row pandas-records JSON and 10,000-row Arrow stream at
c=--batch-concurrency. Each is warmed up, then measured for --seconds with wrk (when installed)
or the built-in generator (benchmarks.load). Besides throughput and latency: the CPU seconds of
the serving processes (the peer; a Serve app's replicas plus the Serve proxies) per request, and
the resident memory of each system's processes. Prints the table with every figure's ratio to
the peer, writes the figures to --out (bench-results/core.json) and a markdown table beside it
(core.md).
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import os
import platform
import sys
import tempfile
import time
import timeit
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from benchmarks import load, payloads, procs, report, systems, wrk
from benchmarks.fraud_steps import FraudSteps
from benchmarks.peer import FraudModel, arrow_infer, records_infer
from cluster.convert import to_onnx
from examples.fraud import FEATURES, fraud_pipeline_spec, make_transactions, train_fraud_model

SYSTEMS = ("peer", "corral-auto", "corral-own", "bare-serve", "bare-chain")
# system -> (pipeline name, placement of every step)
CORRAL_PIPELINES = {"corral-auto": ("bench-auto", "auto"), "corral-own": ("bench-own", "own")}

# (target, concurrency, seconds) -> result: wrk or the built-in generator, same figures either way
Client = Callable[[load.Target, int, float], load.LoadResult]


@dataclass(frozen=True)
class Workload:
    name: str
    fmt: str  # "records" (pandas records JSON) or "arrow" (Arrow IPC stream)
    rows: int
    concurrency: int


@dataclass(frozen=True)
class Setup:
    """What every system is built from: the trained model and the run's settings."""

    workdir: Path
    onnx: bytes
    mean: list[float]
    std: list[float]
    args: argparse.Namespace


def workloads(batch_concurrency: int) -> list[Workload]:
    """The four loads of DESIGN.md's performance targets."""
    c = batch_concurrency
    return [
        Workload("1 row, records, c=1", "records", 1, 1),
        Workload("1 row, records, c=16", "records", 1, 16),
        Workload(f"1,000 rows, records, c={c}", "records", 1_000, c),
        Workload(f"10,000 rows, arrow, c={c}", "arrow", 10_000, c),
    ]


def body_of(work: Workload) -> bytes:
    """The request body every system gets for `work`."""
    df = payloads.rows(work.rows)
    return payloads.records_body(df) if work.fmt == "records" else payloads.arrow_body(df)


def make_client(kind: str) -> Client:
    """The load generator `kind` ("wrk" or "builtin") as a Client."""
    if kind == "wrk":
        return wrk.run
    return lambda target, concurrency, seconds: load.run(target, concurrency, seconds=seconds)


# ------------------------------------------------------------------ systems


def bring_up(name: str, setup: Setup) -> contextlib.AbstractContextManager[systems.System]:
    """The context manager that runs system `name` (one of SYSTEMS)."""
    args = setup.args
    if name == "peer":
        return systems.peer(setup.workdir, setup.onnx, setup.mean, setup.std, args.peer_port)
    if name in CORRAL_PIPELINES:
        pipeline, placement = CORRAL_PIPELINES[name]
        return systems.corral(
            args.corral_url, setup.onnx, setup.mean, setup.std, name=name, pipeline=pipeline, placement=placement
        )
    if name == "bare-serve":
        # The spec's own mean/std and threshold; the model reference is not used by the bare app.
        spec = fraud_pipeline_spec("unused:1", setup.mean, setup.std)
        return systems.bare_serve(args.corral_url, setup.onnx, spec, in_thread=args.bare_in_thread)
    if name == "bare-chain":
        spec = fraud_pipeline_spec("unused:1", setup.mean, setup.std)
        return systems.bare_chain(args.corral_url, setup.onnx, spec)
    raise ValueError(f"unknown system {name!r}; choose from {SYSTEMS}")


def process_sets(system: systems.System) -> tuple[list[int], list[int]]:
    """(pids that serve `system`'s requests, other Serve pids).

    A Serve app's requests pass through the proxies (the proxy actor and HAProxy) into its replicas;
    the other Serve processes (controller, other apps: Corral's log sink...) are counted apart,
    since work a request triggers there (logging) is off its path but still the system's cost.
    """
    if system.pid is not None:
        return [system.pid], []
    if system.app is None:
        return [], []
    from benchmarks import serve_cluster

    server = {r.pid for r in serve_cluster.app_replicas(system.app)} | set(serve_cluster.proxy_pids())
    others = set(serve_cluster.serve_pids()) - server
    return sorted(server), sorted(others)


def memory(system: systems.System) -> dict[str, Any] | None:
    """Resident memory of the processes that are `system` (after its load: caches and arenas grown)."""
    if system.pid is not None:
        rss = procs.rss_bytes(system.pid)
        return None if rss is None else {"replicas": 1, "rss_mb": round(rss / 2**20, 1)}
    if system.app is not None:
        from benchmarks import serve_cluster

        return serve_cluster.memory(system.app)
    return None


# ------------------------------------------------------------------ measuring


def measure(
    system: systems.System, work: Workload, body: bytes, seconds: float, warmup: float, client: Client
) -> dict[str, Any]:
    """Warm up, then run `work` for `seconds`; with the CPU the serving processes used meanwhile."""
    target = load.Target(system.url, body, system.headers[work.fmt], rows=work.rows)
    client(target, work.concurrency, warmup)
    server, others = process_sets(system)  # looked up per run: a replica may have been replaced
    before = procs.total_cpu_seconds(server), procs.total_cpu_seconds(others)
    result = client(target, work.concurrency, seconds).as_dict()
    after = procs.total_cpu_seconds(server), procs.total_cpu_seconds(others)
    server_cpu = _delta(before[0], after[0]) if server else None
    other_cpu = _delta(before[1], after[1]) if others else None
    result.update(cpu_figures(result, server_cpu, other_cpu))
    if system.app is None:
        del result["other_serve_cpu_pct"]  # only Serve systems have other Serve processes
    return result


def _delta(before: float | None, after: float | None) -> float | None:
    return None if before is None or after is None else after - before


def cpu_figures(result: dict[str, Any], server_cpu: float | None, other_cpu: float | None) -> dict[str, Any]:
    """CPU use over the measured seconds: the server's (percent of one core, and requests per CPU
    second), the other Serve processes' and the load generator's (percent of one core)."""
    seconds = result["seconds"]

    def pct(cpu: float | None) -> float | None:
        return None if cpu is None or not seconds > 0 else round(100 * cpu / seconds, 1)

    return {
        "cpu_pct": pct(server_cpu),
        "req_per_cpu_s": result["requests"] / server_cpu if server_cpu else None,
        "other_serve_cpu_pct": pct(other_cpu),
        "client_cpu_pct": pct(result.get("client_cpu_s")),
    }


def check(system: systems.System, work: Workload, model: FraudModel) -> str:
    """Send a small request of the workload's format once and compare with the in-process model."""
    sample = payloads.rows(min(work.rows, 50), seed=7)
    body = payloads.records_body(sample) if work.fmt == "records" else payloads.arrow_body(sample)
    try:
        reply = httpx.post(system.url, content=body, headers=system.headers[work.fmt], timeout=30)
    except httpx.HTTPError as exc:
        return f"request failed: {exc}"
    return payloads.check_reply(work.fmt, reply.status_code, reply.content, sample, model)


def measure_system(
    name: str, setup: Setup, works: list[Workload], bodies: dict[str, bytes], model: FraudModel, client: Client
) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """Bring `name` up, check and measure every workload, take it down: (system info, results by workload).

    A system that fails (say, a deploy error) is reported and the run goes on with the next one.
    """
    args = setup.args
    warmup = args.warmup if args.warmup is not None else warmup_seconds(args.seconds)
    info: dict[str, Any] = {}
    results: dict[str, dict[str, Any]] = {}
    print(f"{name}: starting...", flush=True)
    try:
        with bring_up(name, setup) as system:
            info["notes"] = system.notes
            check(system, works[0], model)  # one request through every step: models loaded, caches warm
            info["memory_idle"] = memory(system)
            for work in works:
                print(f"  {work.name}: {name}...", flush=True)
                verdict = check(system, work, model)
                figures = measure(system, work, bodies[work.name], args.seconds, warmup, client)
                results[work.name] = {**figures, "check": verdict}
            info["memory"] = memory(system)
            if system.app is not None:
                from benchmarks import serve_cluster

                info["serve_apps_memory"] = serve_cluster.apps_memory()
    except Exception as exc:  # one broken system must not lose the others' figures
        info["error"] = f"{type(exc).__name__}: {exc}"
        print(f"  {name} failed: {info['error']}", file=sys.stderr, flush=True)
    return info, results


def warmup_seconds(seconds: float) -> float:
    return min(2.0, max(0.5, seconds / 5))


# ------------------------------------------------------------------ the machine and the client


def calibrate(model: FraudModel) -> dict[str, float]:
    """How fast this machine is right now, to compare runs: onnxruntime call and a Python loop."""
    x = np.zeros((1, len(FEATURES)))
    ort_s = min(timeit.repeat(lambda: model(x), number=2_000, repeat=3)) / 2_000
    loop_s = min(timeit.repeat("sum(range(10_000))", number=200, repeat=3)) / 200
    return {
        "fraud_model_single_row_us": round(ort_s * 1e6, 2),
        "python_sum_range_10k_us": round(loop_s * 1e6, 1),
    }


def inprocess_costs(
    model: FraudModel, steps: FraudSteps, works: list[Workload], bodies: dict[str, bytes]
) -> dict[str, dict[str, float]]:
    """Microseconds per request body without any server: the peer's code against Corral's codecs and
    steps (what bare Serve runs). Tells how much of a gap is step code rather than serving."""
    out = {}
    for work in works:
        key = f"{work.rows:,} row{'s' if work.rows > 1 else ''} {work.fmt}"
        if key in out:
            continue  # the same body at another concurrency
        body = bodies[work.name]
        if work.fmt == "records":
            peer_call = functools.partial(records_infer, model, body)
            corral_call = functools.partial(steps.infer, body, "application/json")
        else:
            peer_call = functools.partial(arrow_infer, model, body)
            corral_call = functools.partial(steps.infer, body, systems.ARROW_STREAM)
        number = max(5, 2_000 // work.rows)  # about 0.1-1 s per repeat
        peer_us = min(timeit.repeat(peer_call, number=number, repeat=3)) / number * 1e6
        corral_us = min(timeit.repeat(corral_call, number=number, repeat=3)) / number * 1e6
        out[key] = {"peer_us": round(peer_us, 1), "corral_steps_us": round(corral_us, 1)}
    return out


def generator_ceiling(workdir: Path, port: int, seconds: float, client: Client) -> dict[str, dict[str, Any]]:
    """The load generator against a trivial server: what it can drive at all on this machine."""
    cmd = [sys.executable, "-m", "benchmarks.echo", "--port", str(port)]
    body = payloads.records_body(payloads.rows(1))
    target = load.Target(f"http://127.0.0.1:{port}/infer", body, {"content-type": "application/json"})
    with systems.local_server(cmd, port, workdir / "echo.log"):
        return {f"c={c}": client(target, c, seconds).as_dict() for c in (1, 16)}


# ------------------------------------------------------------------ the run


@contextlib.contextmanager
def trained_setup(args: argparse.Namespace) -> Iterator[tuple[Setup, FraudModel]]:
    """Train and convert the demo model; yield the Setup and the in-process model replies are checked with."""
    print("training and converting the fraud model...", flush=True)
    model_obj, mean, std = train_fraud_model(make_transactions(20_000, seed=0), "logreg")
    onnx = to_onnx(model_obj, n_features=len(FEATURES))
    with tempfile.TemporaryDirectory(prefix="corral-bench-") as tmp:
        workdir = Path(tmp)
        model_path = workdir / "model.onnx"
        model_path.write_bytes(onnx)
        yield Setup(workdir, onnx, mean, std, args), FraudModel(model_path, mean, std)


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Measure every selected system on every workload; the figures as benchmarks.report reads them."""
    works = workloads(args.batch_concurrency)
    client = make_client(args.client)
    out: dict[str, Any] = {
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "loadavg_start": os.getloadavg()},
        "settings": {
            "seconds": args.seconds,
            "warmup_s": args.warmup if args.warmup is not None else warmup_seconds(args.seconds),
            "client": args.client,
            "systems": list(args.systems),
            "batch_concurrency": args.batch_concurrency,
            "corral_url": args.corral_url if set(args.systems) - {"peer"} else None,
            "bare_in_thread": args.bare_in_thread,
        },
        "systems": {},
        "workloads": [],
    }
    bodies = {work.name: body_of(work) for work in works}
    with trained_setup(args) as (setup, model):
        out["machine"]["calibration_start"] = calibrate(model)
        steps = FraudSteps.from_spec(setup.onnx, fraud_pipeline_spec("unused:1", setup.mean, setup.std))
        out["inprocess_us"] = inprocess_costs(model, steps, works, bodies)
        print(f"measuring the load generator's ceiling ({args.client})...", flush=True)
        out["load_generator_ceiling"] = generator_ceiling(setup.workdir, args.echo_port, min(args.seconds, 3), client)
        by_system = {}
        for name in args.systems:
            out["systems"][name], by_system[name] = measure_system(name, setup, works, bodies, model, client)
        out["machine"]["calibration_end"] = calibrate(model)
    for work in works:
        results = {name: by_system[name].get(work.name) for name in args.systems}
        entry: dict[str, Any] = {"workload": work.name, **asdict(work), "body_bytes": len(bodies[work.name])}
        entry["results"] = results
        entry["ratio"] = report.ratios(results)
        entry["corral_vs_bare_req_per_s"] = report.overhead(entry)
        out["workloads"].append(entry)
    out["machine"]["loadavg_end"] = os.getloadavg()
    return out


def print_summary(results: dict[str, Any]) -> None:
    """The tables and context lines a reader needs after a run."""
    print()
    print(report.table(results["workloads"], results["settings"]["systems"]))
    print()
    systems_info = results["systems"].items()
    print(
        report.memory_table(
            {name: info.get("memory_idle") for name, info in systems_info},
            {name: info.get("memory") for name, info in systems_info},
        )
    )
    for name, info in results["systems"].items():
        if info.get("error"):
            print(f"! {name} was not measured: {info['error']}")
    ceiling = results["load_generator_ceiling"]
    print(
        f"load generator ceiling ({results['settings']['client']}, trivial server): "
        + ", ".join(f"{k} {v['req_per_s']:,.0f} req/s" for k, v in ceiling.items())
    )
    print(
        "in-process us per request, peer code / Corral codecs+steps: "
        + ", ".join(
            f"{k} {v['peer_us']:,.0f} / {v['corral_steps_us']:,.0f}" for k, v in results["inprocess_us"].items()
        )
    )
    print(f"machine: {results['machine']}")


def parse_systems(text: str) -> list[str]:
    """'peer,bare-serve' -> ['peer', 'bare-serve'], in the order given, each once."""
    names = list(dict.fromkeys(part.strip() for part in text.split(",") if part.strip()))
    unknown = [n for n in names if n not in SYSTEMS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"unknown systems {unknown}; choose from {','.join(SYSTEMS)}")
    return names


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=10.0, help="measured seconds per workload and system")
    parser.add_argument(
        "--warmup",
        type=float,
        default=None,
        help="warm-up seconds per workload (default seconds/5, 0.5-2 s); longer lets Serve's autoscaler add routers",
    )
    parser.add_argument(
        "--systems",
        type=parse_systems,
        default=list(SYSTEMS),
        help=f"comma-separated, measured in this order (default {','.join(SYSTEMS)})",
    )
    parser.add_argument("--skip-corral", action="store_true", help="measure the peer only (same as --systems peer)")
    parser.add_argument(
        "--client",
        choices=("wrk", "builtin"),
        default="wrk" if wrk.available() else "builtin",
        help="load generator: wrk (default when on PATH) or the built-in one (benchmarks.load)",
    )
    parser.add_argument("--corral-url", default="http://127.0.0.1:8000", help="Corral (and its Serve proxy)")
    parser.add_argument("--peer-port", type=int, default=18001)
    parser.add_argument("--echo-port", type=int, default=18002, help="trivial server for the generator ceiling")
    parser.add_argument("--batch-concurrency", type=int, default=4, help="in-flight requests for batch workloads")
    parser.add_argument(
        "--bare-in-thread",
        action="store_true",
        help="bare-serve runs its steps in a worker thread, as Corral's inline segment does (default: event loop)",
    )
    parser.add_argument("--out", type=Path, default=systems.REPO / "bench-results" / "core.json")
    args = parser.parse_args(argv)
    if not 0 < args.seconds <= 300:
        parser.error("--seconds must be in (0, 300]")
    if args.batch_concurrency < 1:
        parser.error("--batch-concurrency must be at least 1")
    if args.client == "wrk" and not wrk.available():
        parser.error("--client wrk: no wrk on PATH (apt-get install wrk), or use --client builtin")
    if args.skip_corral:
        args.systems = ["peer"]
    results = run(args)
    print_summary(results)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    markdown_path = args.out.with_name("core.md")
    markdown_path.write_text(report.markdown(results))
    print(f"results written to {args.out} and {markdown_path}")


if __name__ == "__main__":
    main()
