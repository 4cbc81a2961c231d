"""Soak: Corral under mixed traffic for minutes, with a ramp, hot-swaps, explanations and an assay.

    CORRAL_HOME=/tmp/soak-home python -m benchmarks.soak [--minutes 10] [--warmup-minutes 2]

Brings Corral up itself (`corral up` against $CORRAL_HOME; refuses to run on a Ray cluster it did not
start), deploys the demo fraud pipeline as `soak`, then for --minutes:
  traffic   closed-loop client threads (httpx), each request drawn from a mix: pandas-records JSON of
            1 row and of 100 rows, V2 JSON of 10 rows, Arrow stream of 100 rows; every reply is checked
            (status 200, the right number of output rows) and every failure kept with its status and body
  ramp      concurrent clients 1 -> 8 -> 16 -> 4 (15%, 25%, 35%, 25% of the run)
  every ~60 s  a hot-swap (a retrained model uploaded as a new version, swapped in through the SDK)
            and an explanation (anchors and kernel_shap in turn)
  assay     defined at the start (in.amount against the training amounts, 60 s windows, PSI), run by
            the scheduler throughout (CORRAL_ASSAY_TICK_S, default 5 s here)
  memory    RSS of every Corral process every ~10 s: the replicas of every Serve app (pipeline, its
            explainer, control, log sink, assay scheduler), the Serve controller, the proxy actor, HAProxy;
            Ray's raylet and GCS for context
At the end: `corral down` (routers flush their logs on the way out), then the pipeline's log rows over
the soak's window are counted by request id (the Parquet store the logs API reads) and compared with
the successful replies: one log row per answered row (README, "Inference logs"). Before `down`, the
same count through the SDK's `pipeline.logs` when the run logged at most 1,000,000 rows (its limit).

Writes benchmarks/results/soak-<date>.json and prints a markdown summary: req/s and latency per phase,
failures, the RSS table (first vs last sample after warm-up, max/min; > 10% flagged), log rows vs
replies, swaps, explanations and assay windows.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import orjson
import pyarrow as pa

from benchmarks import payloads, procs
from benchmarks.systems import ARROW_STREAM, REPO

os.environ.setdefault("CORRAL_ASSAY_TICK_S", "5")  # before any CorralSettings is built

PIPELINE = "soak"
ASSAY = "soak-amount"
RECORDS = "application/json; format=pandas-records"
RSS_LIMIT = 1.10  # "flat within 10% after warm-up"
API_WINDOW_S = 20.0  # the logs API check's window when the whole soak is over its row limit
# (clients, share of the run)
RAMP: tuple[tuple[int, float], ...] = ((1, 0.15), (8, 0.25), (16, 0.35), (4, 0.25))


@dataclass(frozen=True)
class Kind:
    """One kind of request in the mix: `fmt` is records, v2 or arrow; `weight` its share of requests."""

    name: str
    fmt: str
    rows: int
    weight: float
    bodies: tuple[bytes, ...] = ()


@dataclass
class Outcome:
    """One finished request."""

    t: float  # seconds since the soak started, at the reply
    kind: str
    phase: int
    ok: bool
    latency_ms: float
    rows: int
    request_id: str | None


@dataclass
class Tally:
    """What the client threads saw; appended to from many threads (list.append is atomic)."""

    outcomes: list[Outcome] = field(default_factory=list)
    failures: list[dict[str, Any]] = field(default_factory=list)


# ------------------------------------------------------------------ requests and replies


def v2_body(df: Any) -> bytes:
    """An Open Inference Protocol JSON request: one FP64 input per column."""
    inputs = [{"name": c, "shape": [len(df)], "datatype": "FP64", "data": df[c].astype(float).tolist()} for c in df]
    return orjson.dumps({"inputs": inputs})


def make_kinds(variants: int = 8) -> list[Kind]:
    """The traffic mix, each kind with `variants` bodies of different rows."""

    def bodies(fmt: str, rows: int) -> tuple[bytes, ...]:
        encode: Callable[[Any], bytes] = {
            "records": payloads.records_body,
            "v2": v2_body,
            "arrow": payloads.arrow_body,
        }[fmt]
        return tuple(encode(payloads.rows(rows, seed=100 + i)) for i in range(variants))

    mix = [("records-1", "records", 1, 0.5), ("records-100", "records", 100, 0.15)]
    mix += [("v2-10", "v2", 10, 0.2), ("arrow-100", "arrow", 100, 0.15)]
    return [Kind(name, fmt, rows, weight, bodies(fmt, rows)) for name, fmt, rows, weight in mix]


def reply_rows(fmt: str, content: bytes) -> int:
    """Output rows in a reply; raises if it is not a reply of the pipeline's outputs."""
    if fmt == "arrow":
        table = pa.ipc.open_stream(content).read_all()
        if "is_fraud" not in table.column_names:
            raise ValueError(f"no is_fraud column in {table.column_names}")
        return table.num_rows
    data = orjson.loads(content)
    if fmt == "records":
        if not isinstance(data, list) or (data and "is_fraud" not in data[0]):
            raise ValueError("not a list of records with is_fraud")
        return len(data)
    shapes = {o["name"]: o["shape"][0] for o in data["outputs"]}
    if "is_fraud" not in shapes or len(set(shapes.values())) != 1:
        raise ValueError(f"V2 outputs {shapes}")
    return int(shapes["is_fraud"])


class Traffic:
    """Closed-loop client threads; thread i sends while i < the current phase's concurrency."""

    def __init__(self, url: str, token: str, kinds: list[Kind], seed: int = 0) -> None:
        self.url = url
        self.token = token
        self.kinds = kinds
        self.weights = [k.weight for k in kinds]
        self.tally = Tally()
        self.concurrency = 0
        self.phase = 0
        self.started = time.monotonic()
        self.started_wall = datetime.now(UTC)
        self.stop = threading.Event()
        self.seed = seed
        self.threads: list[threading.Thread] = []

    def start(self, max_clients: int) -> None:
        self.started = time.monotonic()
        self.started_wall = datetime.now(UTC)
        for i in range(max_clients):
            thread = threading.Thread(target=self._client, args=(i,), name=f"soak-client-{i}", daemon=True)
            thread.start()
            self.threads.append(thread)

    def join(self) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=90)

    def _client(self, index: int) -> None:
        rng = random.Random(self.seed * 1000 + index)
        headers = {"authorization": f"Bearer {self.token}"}
        with httpx.Client(headers=headers, timeout=httpx.Timeout(60.0, connect=10.0)) as http:
            while not self.stop.is_set():
                if index >= self.concurrency:
                    time.sleep(0.05)
                    continue
                kind = rng.choices(self.kinds, self.weights)[0]
                self._one(http, kind, rng.choice(kind.bodies))

    def _one(self, http: httpx.Client, kind: Kind, body: bytes) -> None:
        content_type = {"records": RECORDS, "v2": "application/json", "arrow": ARROW_STREAM}[kind.fmt]
        phase = self.phase
        sent = time.monotonic()
        status: int | str = "transport"
        text = b""
        request_id = None
        try:
            reply = http.post(self.url, content=body, headers={"content-type": content_type})
            status, text = reply.status_code, reply.content
            request_id = reply.headers.get("x-corral-request-id")
            rows = reply_rows(kind.fmt, text) if status == 200 else -1
            ok = status == 200 and rows == kind.rows
            problem = "" if ok else f"{rows} rows, expected {kind.rows}" if status == 200 else ""
        except Exception as exc:  # every failure is counted and described, never raised in a client thread
            ok, rows, problem = False, -1, f"{type(exc).__name__}: {exc}"
        now = time.monotonic()
        latency = (now - sent) * 1e3
        self.tally.outcomes.append(
            Outcome(round(now - self.started, 3), kind.name, phase, ok, latency, kind.rows if ok else 0, request_id)
        )
        if not ok:
            self.tally.failures.append(
                {
                    "t": round(now - self.started, 1),
                    "kind": kind.name,
                    "status": status,
                    "problem": problem,
                    "body": text[:300].decode("utf-8", "replace"),
                }
            )


# ------------------------------------------------------------------ Corral's processes and memory


def corral_processes() -> dict[str, int]:
    """label -> pid of every Corral process: Serve replicas by app/deployment, controller, proxies, HAProxy;
    and Ray's raylet and GCS (labelled ray/...) for context."""
    from benchmarks import serve_cluster

    found: dict[str, int] = {}
    for actor in serve_cluster._alive_actors():
        name, pid = actor.class_name or "", int(actor.pid or 0)
        if not pid:
            continue
        if name.startswith("ServeReplica:"):
            app, _, deployment = name[len("ServeReplica:") :].partition(":")
            found[f"{app}/{deployment} pid {pid}"] = pid
        elif name == serve_cluster.CONTROLLER_CLASS:
            found[f"serve controller pid {pid}"] = pid
        elif name in serve_cluster.PROXY_ACTOR_CLASSES:
            found[f"serve proxy ({name}) pid {pid}"] = pid
    for comm in ("raylet", "gcs_server"):
        for pid in procs.pids_named(comm):
            found[f"ray/{comm} pid {pid}"] = pid
    return found


def haproxy_rss() -> int:
    """RSS of all HAProxy processes together: it reloads (a new process, the old one drains) on every
    routing change, such as an app being deployed, so single pids come and go."""
    return sum(procs.rss_bytes(pid) or 0 for pid in procs.pids_named("haproxy"))


class MemorySampler:
    """RSS of every Corral process every `interval_s` seconds, in a thread."""

    def __init__(self, started: float, interval_s: float = 10.0) -> None:
        self.started = started
        self.interval_s = interval_s
        self.samples: dict[str, list[tuple[float, int]]] = defaultdict(list)
        self.stop = threading.Event()
        self.errors: list[str] = []
        self.thread = threading.Thread(target=self._run, name="soak-rss", daemon=True)

    def sample(self) -> None:
        t = round(time.monotonic() - self.started, 1)
        try:
            found = corral_processes()
        except Exception as exc:  # the state API can time out under load: note it, sample next time
            self.errors.append(f"t={t}: {type(exc).__name__}: {exc}")
            return
        for label, pid in found.items():
            rss = procs.rss_bytes(pid)
            if rss is not None:
                self.samples[label].append((t, rss))
        self.samples["haproxy (all processes)"].append((t, haproxy_rss()))

    def _run(self) -> None:
        while not self.stop.wait(self.interval_s):
            self.sample()


def rss_table(samples: dict[str, list[tuple[float, int]]], warmup_s: float, end_s: float) -> list[dict[str, Any]]:
    """Per process, over the samples after warm-up: first, last, min, max (MB), last/first and max/min.

    A process flagged `grew` went up more than 10% (last/first or max/min); one that did not live
    through the whole measured span (started late, or exited) is marked as such. `floor_ratio` is the
    lowest sample of the last minute over the lowest of the first minute after warm-up: a creep of the
    baseline, apart from transient peaks (a merge, a reload) that max/min also counts.
    """
    rows = []
    for label, series in sorted(samples.items()):
        after = [(t, rss) for t, rss in series if t >= warmup_s]
        if not after:
            rows.append({"process": label, "samples": 0, "note": "gone before warm-up ended"})
            continue
        values = [rss for _, rss in after]
        first, last = values[0], values[-1]
        row: dict[str, Any] = {
            "process": label,
            "samples": len(after),
            "first_mb": round(first / 2**20, 1),
            "last_mb": round(last / 2**20, 1),
            "min_mb": round(min(values) / 2**20, 1),
            "max_mb": round(max(values) / 2**20, 1),
            "last_over_first": round(last / first, 3),
            "max_over_min": round(max(values) / min(values), 3),
            "floor_ratio": round(
                min(v for t, v in after if t >= after[-1][0] - 60) / min(v for t, v in after if t <= after[0][0] + 60),
                3,
            ),
            "first_t": after[0][0],
            "last_t": after[-1][0],
        }
        # Ray's own daemons and HAProxy (whose old process lingers after each reload) are shown for
        # context; the verdict is about Corral's processes and Serve's, which run Corral's apps.
        context = label.startswith(("ray/", "haproxy"))
        row["grew"] = not context and (row["last_over_first"] > RSS_LIMIT or row["max_over_min"] > RSS_LIMIT)
        if context:
            row["note"] = "context, not judged"
        if after[0][0] > warmup_s + 30 or after[-1][0] < end_s - 30:
            row["note"] = "did not live through the measured span"
        rows.append(row)
    return rows


# ------------------------------------------------------------------ swaps, explanations, the assay


class Events:
    """Every `period_s`: a hot-swap, then (half a period later) an explanation; in a thread."""

    def __init__(self, pipeline: Any, client: Any, models: list[bytes], reference: Any, started: float) -> None:
        self.pipeline = pipeline
        self.client = client
        self.models = models
        self.reference = reference
        self.started = started
        self.stop = threading.Event()
        self.swaps: list[dict[str, Any]] = []
        self.explains: list[dict[str, Any]] = []
        self.thread = threading.Thread(target=self._run, name="soak-events", daemon=True)
        self.period_s = 60.0

    def _run(self) -> None:
        k = 0
        while True:
            if self.stop.wait(max(0.0, self.started + 20 + k * self.period_s - time.monotonic())):
                return
            self.swap(k)
            if self.stop.wait(max(0.0, self.started + 50 + k * self.period_s - time.monotonic())):
                return
            self.explain(k)
            k += 1

    def _since(self) -> float:
        return round(time.monotonic() - self.started, 1)

    def swap(self, k: int) -> None:
        from examples.fraud import FEATURES

        t0, at = time.monotonic(), self._since()
        entry: dict[str, Any] = {"t": at}
        try:
            info = self.client.upload_model(PIPELINE, self.models[k % len(self.models)], n_features=len(FEATURES))
            entry["model"] = f"{PIPELINE}:{info['version']}"
            result = self.pipeline.swap_model("model", entry["model"])
            entry["pipeline_version"] = result.get("version")
            entry["ok"] = True
        except Exception as exc:  # a failed swap is a finding, not the end of the soak
            entry.update(ok=False, error=f"{type(exc).__name__}: {exc}"[:500])
        entry["seconds"] = round(time.monotonic() - t0, 2)
        self.swaps.append(entry)
        print(f"  t={at:.0f}s swap -> {entry.get('model')} ok={entry['ok']} in {entry['seconds']} s", flush=True)

    def explain(self, k: int) -> None:
        method = ("anchors", "kernel_shap")[k % 2]
        params: dict[str, Any] = {"timeout_s": 90}
        if method == "anchors":
            params["percentiles"] = [50, 90, 95, 99]
        t0, at = time.monotonic(), self._since()
        entry: dict[str, Any] = {"t": at, "method": method}
        try:
            row = self.reference.iloc[[k % len(self.reference)]]
            explanation = self.pipeline.explain(method, row, reference=self.reference, **params)
            entry["ok"] = True
            entry["summary"] = _explain_summary(method, explanation)
        except Exception as exc:  # a failed explanation is a finding, not the end of the soak
            entry.update(ok=False, error=f"{type(exc).__name__}: {exc}"[:500])
        entry["seconds"] = round(time.monotonic() - t0, 2)
        self.explains.append(entry)
        print(f"  t={at:.0f}s explain {method} ok={entry['ok']} in {entry['seconds']} s", flush=True)


def _explain_summary(method: str, explanation: Any) -> Any:
    if method == "anchors":
        return explanation.data.get("anchor")
    return [(name, round(float(v), 4)) for name, v in explanation.importances()[:3]]


def assay_spec(baseline: Sequence[float]) -> dict[str, Any]:
    """in.amount against the training amounts, 60 s windows starting now."""
    return {
        "pipeline": PIPELINE,
        "target": "in.amount",
        "baseline": {"values": [float(v) for v in baseline]},
        "window": {"width": "60s", "interval": "60s", "start": datetime.now(UTC).isoformat()},
        "metric": "psi",
        "bins": {"mode": "quantile", "count": 5},
        "thresholds": {"warning": 0.1, "alert": 0.25},
    }


# ------------------------------------------------------------------ figures


def phase_plan(seconds: float) -> list[tuple[float, float, int]]:
    """(start, end, clients) of each ramp phase."""
    plan, t = [], 0.0
    for clients, share in RAMP:
        plan.append((t, t + share * seconds, clients))
        t += share * seconds
    return plan


def latency_figures(outcomes: list[Outcome], seconds: float) -> dict[str, Any]:
    ok = [o for o in outcomes if o.ok]
    lat = np.array([o.latency_ms for o in ok]) if ok else np.array([np.nan])
    return {
        "requests": len(outcomes),
        "ok": len(ok),
        "failed": len(outcomes) - len(ok),
        "req_per_s": round(len(ok) / seconds, 1) if seconds > 0 else None,
        "rows_per_s": round(sum(o.rows for o in ok) / seconds, 1) if seconds > 0 else None,
        "p50_ms": round(float(np.nanpercentile(lat, 50)), 2),
        "p99_ms": round(float(np.nanpercentile(lat, 99)), 2),
    }


def traffic_figures(tally: Tally, plan: list[tuple[float, float, int]], kinds: list[Kind]) -> dict[str, Any]:
    by_phase = []
    for i, (start, end, clients) in enumerate(plan):
        figures = latency_figures([o for o in tally.outcomes if o.phase == i], end - start)
        by_phase.append({"phase": i, "clients": clients, "start_s": round(start), "end_s": round(end), **figures})
    total_s = plan[-1][1]
    by_kind = {k.name: latency_figures([o for o in tally.outcomes if o.kind == k.name], total_s) for k in kinds}
    statuses = Counter(str(f["status"]) for f in tally.failures)
    return {
        "total": latency_figures(tally.outcomes, total_s),
        "phases": by_phase,
        "kinds": by_kind,
        "failures_by_status": dict(statuses),
        "failures_first_20": tally.failures[:20],
    }


def expected_rows(tally: Tally) -> tuple[dict[str, int], int]:
    """(request id -> rows of every successful reply, successful replies without a request id)."""
    by_id: dict[str, int] = {}
    missing = 0
    for o in tally.outcomes:
        if o.ok:
            if o.request_id:
                by_id[o.request_id] = by_id.get(o.request_id, 0) + o.rows
            else:
                missing += 1
    return by_id, missing


def compare_logs(logged: dict[str, int], expected: dict[str, int], no_id: int) -> dict[str, Any]:
    """Log rows per request id against the rows of the successful replies."""
    ours = {rid: n for rid, n in logged.items() if rid in expected}
    unlogged = [rid for rid in expected if rid not in logged]
    wrong = {rid: (logged[rid], expected[rid]) for rid in ours if logged[rid] != expected[rid]}
    exp_rows = sum(expected.values())
    return {
        "successful_replies": len(expected) + no_id,
        "replies_without_request_id": no_id,
        "reply_rows": exp_rows,
        "log_rows_of_these_requests": sum(ours.values()),
        "log_rows_in_window": sum(logged.values()),
        "log_rows_of_other_requests": sum(n for rid, n in logged.items() if rid not in expected),
        "requests_not_logged": len(unlogged),
        "requests_with_wrong_row_count": len(wrong),
        "wrong_examples": dict(list(wrong.items())[:5]),
        "equal": not unlogged and not wrong and no_id == 0 and sum(ours.values()) == exp_rows,
    }


def log_rows_from_store(home: Path, start: datetime, end: datetime) -> dict[str, int]:
    """request id -> log rows in [start, end), read from the Parquet store (what the logs API reads)."""
    import duckdb

    from monitoring.log_schema import INFERENCES
    from monitoring.log_store import LogStore

    store = LogStore(home / "logs")
    files = store.files(INFERENCES, "default", PIPELINE, start, end)
    if not files:
        return {}
    con = duckdb.connect()
    try:
        rows = con.execute(
            "SELECT request_id, count(*) FROM read_parquet(?, union_by_name=true, hive_partitioning=false) "
            "WHERE time >= ? AND time < ? GROUP BY request_id",
            [files, start, end],
        ).fetchall()
    finally:
        con.close()
    return {str(rid): int(n) for rid, n in rows}


def log_rows_from_api(pipeline: Any, start: datetime, end: datetime, limit: int) -> dict[str, int]:
    frame = pipeline.logs(start, end, limit=limit)
    if frame.empty:
        return {}
    return {str(k): int(v) for k, v in frame.groupby("request_id").size().items()}


# ------------------------------------------------------------------ the run


def train_models(count: int) -> tuple[bytes, list[float], list[float], list[bytes], Any]:
    """The first model (ONNX), its mean/std, `count` retrained models for the swaps, and the training frame."""
    from cluster.convert import to_onnx
    from examples.fraud import FEATURES, make_transactions, train_fraud_model

    train = make_transactions(20_000, seed=0)
    model, mean, std = train_fraud_model(train, "logreg")
    first = to_onnx(model, n_features=len(FEATURES))
    swaps = []
    for i in range(count):
        retrained, _, _ = train_fraud_model(make_transactions(5_000, seed=1 + i), "logreg")
        swaps.append(to_onnx(retrained, n_features=len(FEATURES)))
    return first, mean, std, swaps, train


def ensure_no_ray() -> None:
    from cluster.lifecycle import _ray_running

    if _ray_running():
        raise SystemExit(
            "a Ray cluster is already running: the soak brings up its own Corral. Stop it first "
            "(CORRAL_HOME=... corral down, or ray stop --force)"
        )


def run(args: argparse.Namespace) -> dict[str, Any]:
    from cluster import lifecycle
    from cluster.sdk import Client
    from cluster.settings import CorralSettings
    from examples.fraud import FEATURES, fraud_pipeline_spec

    seconds = args.minutes * 60
    warmup_s = args.warmup_minutes * 60
    settings = CorralSettings()
    out: dict[str, Any] = {
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": {"cpus": os.cpu_count(), "loadavg_start": os.getloadavg()},
        "settings": {
            "minutes": args.minutes,
            "warmup_minutes": args.warmup_minutes,
            "ramp": [{"clients": c, "share": s} for c, s in RAMP],
            "corral_home": str(settings.home),
            "assay_tick_s": settings.assay_tick_s,
            "rss_interval_s": args.rss_interval,
        },
    }
    print("training the fraud models...", flush=True)
    n_swaps = int(seconds // 60) + 1
    onnx, mean, std, swap_models, train = train_models(n_swaps)
    kinds = make_kinds()
    out["settings"]["mix"] = [{"kind": k.name, "fmt": k.fmt, "rows": k.rows, "weight": k.weight} for k in kinds]
    ensure_no_ray()
    print(f"corral up (CORRAL_HOME={settings.home})...", flush=True)
    t0 = time.monotonic()
    lifecycle.up(settings, say=lambda line: print(f"  {line}", flush=True))
    out["corral_up_s"] = round(time.monotonic() - t0, 1)
    token = lifecycle.admin_token(settings)
    assert token is not None
    down_done = False
    try:
        with Client(settings.base_url, token=token, timeout=300) as client:
            info = client.upload_model(PIPELINE, onnx, n_features=len(FEATURES))
            pipeline = client.pipeline(PIPELINE, fraud_pipeline_spec(f"{PIPELINE}:{info['version']}", mean, std))
            t0 = time.monotonic()
            pipeline.deploy()
            out["deploy_s"] = round(time.monotonic() - t0, 1)
            assay = client.assay(ASSAY)
            assay.apply(assay_spec(train["amount"].sample(2_000, random_state=0).tolist()))
            url = f"{settings.base_url}/ws/{client.workspace}/v2/models/{PIPELINE}/infer"
            soak_start = datetime.now(UTC) - timedelta(seconds=1)
            traffic = Traffic(url, token, kinds)
            sampler = MemorySampler(time.monotonic(), args.rss_interval)
            reference = train[FEATURES].sample(200, random_state=1).reset_index(drop=True)
            events = Events(pipeline, client, swap_models, reference, time.monotonic())
            plan = phase_plan(seconds)
            print(f"soak: {args.minutes:g} min, ramp {[c for _, _, c in plan]} clients", flush=True)
            traffic.start(max(c for _, _, c in plan))
            sampler.started = events.started = traffic.started
            sampler.sample()
            sampler.thread.start()
            events.thread.start()
            drive(traffic, plan)
            traffic.join()
            events.stop.set()
            events.thread.join(timeout=180)
            sampler.stop.set()
            sampler.thread.join(timeout=60)
            sampler.sample()
            end_s = round(time.monotonic() - traffic.started, 1)
            soak_end = datetime.now(UTC) + timedelta(seconds=1)
            out["traffic"] = traffic_figures(traffic.tally, plan, kinds)
            out["rss"] = rss_table(sampler.samples, warmup_s, end_s)
            out["rss_sampler_errors"] = sampler.errors
            out["rss_series_mb"] = {
                label: [(t, round(rss / 2**20, 1)) for t, rss in series] for label, series in sampler.samples.items()
            }
            out["swaps"] = events.swaps
            out["explains"] = events.explains
            time.sleep(3)  # routers flush every 100 ms; the sink writes at once
            out["assay"] = assay_figures(assay)
            expected, no_id = expected_rows(traffic.tally)
            out["logs_api_before_down"] = logs_via_api(traffic, pipeline, soak_start, soak_end)
        print("corral down...", flush=True)
        t0 = time.monotonic()
        lifecycle.down(settings, say=lambda line: print(f"  {line}", flush=True))
        down_done = True
        out["corral_down_s"] = round(time.monotonic() - t0, 1)
        logged = log_rows_from_store(settings.home, soak_start, soak_end)
        out["logs_after_down"] = compare_logs(logged, expected, no_id)
    finally:
        if not down_done:
            print("corral down (after an error)...", flush=True)
            lifecycle.down(settings, say=lambda line: print(f"  {line}", flush=True))
    out["machine"]["loadavg_end"] = os.getloadavg()
    return out


def drive(traffic: Traffic, plan: list[tuple[float, float, int]]) -> None:
    """Set the client count phase by phase; a progress line every 30 s."""
    last_print = 0.0
    for i, (_, end, clients) in enumerate(plan):
        traffic.phase, traffic.concurrency = i, clients
        print(f"  phase {i}: {clients} clients until t={end:.0f}s", flush=True)
        while (now := time.monotonic() - traffic.started) < end:
            if now - last_print >= 30:
                done = traffic.tally.outcomes
                failed = len(traffic.tally.failures)
                print(f"  t={now:.0f}s requests {len(done):,} failed {failed}", flush=True)
                last_print = now
            time.sleep(min(1.0, max(0.0, end - now)))
    traffic.concurrency = 0


def assay_figures(assay: Any) -> dict[str, Any]:
    try:
        results = assay.results()
    except Exception as exc:  # reported, the soak's other figures still count
        return {"error": f"{type(exc).__name__}: {exc}"}
    return {
        "windows": len(results),
        "statuses": dict(Counter(results["status"].astype(str))),
        "rows": [int(r) for r in results["rows"].fillna(0)],
        "scores": [None if s is None or s != s else round(float(s), 4) for s in results["score"]],
    }


def logs_via_api(traffic: Traffic, pipeline: Any, start: datetime, end: datetime) -> dict[str, Any]:
    """The logs API's rows against the replies: over the whole soak when it logged at most 900,000 rows
    (the API returns at most 1,000,000), else over its last API_WINDOW_S seconds of traffic.

    For a window: the requests answered more than 2 s inside it must all be there with their row
    counts, and every row it returns must be of a successful reply, with that reply's row count.
    """
    expected, no_id = expected_rows(traffic.tally)
    try:
        if sum(expected.values()) <= 900_000:
            logged = log_rows_from_api(pipeline, start, end, 1_000_000)
            return {"window": "whole soak", **compare_logs(logged, expected, no_id)}
        end_t = max(o.t for o in traffic.tally.outcomes)
        w0, w1 = end_t - API_WINDOW_S, end_t + 0.5
        wall = traffic.started_wall
        logged = log_rows_from_api(pipeline, wall + timedelta(seconds=w0), wall + timedelta(seconds=w1), 1_000_000)
        inside = [o for o in traffic.tally.outcomes if o.ok and w0 + 2 <= o.t <= w1 - 2]
        inner, inner_no_id = expected_rows(Tally(outcomes=inside))
        result = compare_logs({rid: n for rid, n in logged.items() if rid in inner}, inner, inner_no_id)
        result["window"] = f"last {API_WINDOW_S:.0f} s of traffic (t={w0:.0f}-{w1:.0f} s), requests 2 s inside it"
        result["window_rows_not_of_successful_replies"] = sum(n for rid, n in logged.items() if rid not in expected)
        result["window_requests_with_wrong_count"] = sum(
            1 for rid, n in logged.items() if rid in expected and n != expected[rid]
        )
        return result
    except Exception as exc:  # reported; the count after `down` still says whether rows were lost
        return {"error": f"{type(exc).__name__}: {exc}"}


# ------------------------------------------------------------------ the summary


def markdown(out: dict[str, Any]) -> str:
    t, settings = out["traffic"], out["settings"]
    lines = [
        f"Soak, {settings['minutes']:g} min ({out['started']}), warm-up {settings['warmup_minutes']:g} min",
        "",
        "| phase | clients | seconds | requests | failed | req/s | rows/s | p50 ms | p99 ms |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for p in [
        *t["phases"],
        {**t["total"], "phase": "all", "clients": "-", "start_s": 0, "end_s": t["phases"][-1]["end_s"]},
    ]:
        span = f"{p['start_s']}-{p['end_s']}"
        lines.append(
            f"| {p['phase']} | {p['clients']} | {span} | {p['requests']:,} | {p['failed']} | {p['req_per_s']:,} "
            f"| {p['rows_per_s']:,} | {p['p50_ms']} | {p['p99_ms']} |"
        )
    lines += ["", "| kind | requests | failed | p50 ms | p99 ms |", "|---|---|---|---|---|"]
    for name, k in t["kinds"].items():
        lines.append(f"| {name} | {k['requests']:,} | {k['failed']} | {k['p50_ms']} | {k['p99_ms']} |")
    lines += ["", f"Failures by status: {t['failures_by_status'] or 'none'}", ""]
    lines += [
        "| process | first MB | last MB | min MB | max MB | last/first | max/min | floor last/first min | flag |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in out["rss"]:
        if not r.get("samples"):
            lines.append(f"| {r['process']} | | | | | | | | {r.get('note', '')} |")
            continue
        flag = ("GREW > 10%" if r["grew"] else "flat") + (f" ({r['note']})" if r.get("note") else "")
        lines.append(
            f"| {r['process']} | {r['first_mb']} | {r['last_mb']} | {r['min_mb']} | {r['max_mb']} "
            f"| {r['last_over_first']} | {r['max_over_min']} | {r['floor_ratio']} | {flag} |"
        )
    for key, title in (("logs_api_before_down", "logs API before down"), ("logs_after_down", "log store after down")):
        logs = out.get(key, {})
        if "reply_rows" in logs:
            lines.append(
                f"\nLog rows ({title}): {logs['log_rows_of_these_requests']:,} for {logs['successful_replies']:,} "
                f"successful replies of {logs['reply_rows']:,} rows; not logged {logs['requests_not_logged']}, "
                f"wrong count {logs['requests_with_wrong_row_count']}, other rows in window "
                f"{logs['log_rows_of_other_requests']}: {'EQUAL' if logs['equal'] else 'DIFFERENT'}"
                + (f" [{logs['window']}]" if "window" in logs else "")
            )
        else:
            lines.append(f"\nLog rows ({title}): {logs}")
    swaps, explains, assay = out["swaps"], out["explains"], out["assay"]
    swap_s = [s["seconds"] for s in swaps if s["ok"]]
    lines.append(
        f"\nSwaps: {sum(s['ok'] for s in swaps)}/{len(swaps)} ok"
        + (f" ({min(swap_s)}-{max(swap_s)} s each)" if swap_s else "")
        + f"; explanations: {sum(e['ok'] for e in explains)}/{len(explains)} ok"
        + " ("
        + ", ".join(f"{e['method']} {e['seconds']} s" for e in explains)
        + ")"
        + f"; assay windows: {assay.get('windows')} {assay.get('statuses', assay.get('error'))}"
    )
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=10.0, help="soak length (default 10)")
    parser.add_argument(
        "--warmup-minutes", type=float, default=None, help="RSS is judged after this (default 2, or minutes/5 if less)"
    )
    parser.add_argument("--rss-interval", type=float, default=10.0, help="seconds between RSS samples")
    parser.add_argument("--out", type=Path, default=None, help="default benchmarks/results/soak-<date>.json")
    args = parser.parse_args(argv)
    if not 0 < args.minutes <= 120:
        parser.error("--minutes must be in (0, 120]")
    if args.warmup_minutes is None:
        args.warmup_minutes = min(2.0, args.minutes / 5)
    out_path = args.out or REPO / "benchmarks" / "results" / f"soak-{time.strftime('%Y-%m-%d')}.json"
    results = run(args)
    summary = markdown(results)
    print()
    print(summary)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(json.dumps(results, indent=2, default=str) + "\n")
    out_path.with_suffix(".md").write_text(summary)
    print(f"results written to {out_path} and {out_path.with_suffix('.md')}")
    failed = results["traffic"]["total"]["failed"]
    grew = [r["process"] for r in results["rss"] if r.get("grew")]
    equal = results.get("logs_after_down", {}).get("equal")
    print(f"verdict: failed={failed}, RSS grew > 10%: {grew or 'none'}, log rows = replies: {equal}")
    sys.exit(0 if failed == 0 and not grew and equal else 1)


if __name__ == "__main__":
    main()
