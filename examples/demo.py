"""`corral demo`: from nothing to a served fraud pipeline with real traffic, in about a minute."""

from __future__ import annotations

import io
import statistics
import time
from datetime import UTC, datetime
from typing import Any

import httpx
import numpy as np
import pyarrow as pa
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from cluster.lifecycle import up
from cluster.sdk import Client
from cluster.settings import CorralSettings
from examples.experiment import run_experiment
from examples.explain_stage import explain_flagged
from examples.fraud import FEATURES, fraud_pipeline_spec, make_transactions, train_fraud_model
from examples.observe import VALIDATIONS, observe

PIPELINE = "fraud"


def run_demo(console: Console, n_requests: int = 300) -> dict[str, Any]:
    """Run the whole tour and return its figures (the CLI prints them; tests read them)."""
    started = time.perf_counter()
    settings = CorralSettings()
    console.rule("[bold]1. corral up")
    up(settings, lambda m: console.print(f"[cyan]•[/cyan] {m}"))
    client = Client(settings.base_url)

    console.rule("[bold]2. train a fraud classifier on synthetic transactions")
    train = make_transactions(20_000, seed=1)
    model, mean, std = train_fraud_model(train, kind="logreg")
    console.print(f"trained LogisticRegression on {len(train):,} rows, fraud rate {train.is_fraud.mean():.1%}")
    info = client.upload_model("fraud", model, n_features=len(FEATURES))
    console.print(f"converted to ONNX on this machine and uploaded as [bold]fraud:{info['version']}[/bold]")

    console.rule("[bold]3. deploy preprocess -> model -> threshold")
    spec = fraud_pipeline_spec(f"fraud:{info['version']}", mean, std, threshold=0.5)
    spec["validations"] = VALIDATIONS  # every logged row gets anomaly.big_spender
    pipeline = client.pipeline(PIPELINE, spec)
    with console.status("starting one Serve deployment per step…"):
        deployed = pipeline.deploy()
    console.print(f"pipeline [bold]{PIPELINE}[/bold] version {deployed['version']} is {deployed['status']}")

    console.rule("[bold]4. send traffic")
    traffic_started = datetime.now(UTC)
    live = make_transactions(max(n_requests, 10_000), seed=7)
    url = f"{client.url}/ws/default/v2/models/{PIPELINE}/infer"
    headers = {**client._http.headers, "content-type": "application/json; format=pandas-records"}
    latencies: list[float] = []
    flagged = 0
    records = live[FEATURES].to_dict(orient="records")
    with httpx.Client(timeout=30) as http, Progress(console=console, transient=True) as progress:
        task = progress.add_task("single-row requests", total=n_requests)
        for row in records[:n_requests]:
            t0 = time.perf_counter()
            reply = http.post(url, json=[row], headers=headers)
            latencies.append((time.perf_counter() - t0) * 1000)
            reply.raise_for_status()
            flagged += int(reply.json()[0]["is_fraud"])
            progress.advance(task)
        batch = pa.Table.from_pandas(live[FEATURES].head(10_000), preserve_index=False)
        sink = io.BytesIO()
        with pa.ipc.new_stream(sink, batch.schema) as writer:
            writer.write_table(batch)
        t0 = time.perf_counter()
        reply = http.post(
            url,
            content=sink.getvalue(),
            headers={**client._http.headers, "content-type": "application/vnd.apache.arrow.stream"},
        )
        batch_s = time.perf_counter() - t0
        reply.raise_for_status()
        scored = pa.ipc.open_stream(reply.content).read_all()
    batch_flagged = int(np.asarray(scored.column("is_fraud")).sum())

    console.rule("[bold]5. inference log, validation, drift assay")
    observed = observe(console, client, PIPELINE, train, traffic_started, n_requests + scored.num_rows, settings.home)

    console.rule("[bold]6. explain a flagged transaction")
    explained = explain_flagged(console, client, PIPELINE, live, scored, settings.home)

    console.rule("[bold]7. experiment: canary, shadow, ramp, hot-swap")
    experiment = run_experiment(console, client, f"fraud:{info['version']}", mean, std)

    figures = {
        "experiment": experiment,
        "observed": observed,
        "explained": explained,
        "requests": n_requests,
        "p50_ms": statistics.median(latencies),
        "p99_ms": float(np.percentile(latencies, 99)),
        "flagged": flagged,
        "batch_rows": scored.num_rows,
        "batch_rows_per_s": scored.num_rows / batch_s,
        "batch_flagged": batch_flagged,
        "seconds": time.perf_counter() - started,
    }
    table = Table(title="what happened", show_header=False)
    table.add_row("single-row requests", f"{n_requests} (all 200), {flagged} flagged as fraud")
    table.add_row("latency", f"p50 {figures['p50_ms']:.1f} ms, p99 {figures['p99_ms']:.1f} ms (over HTTP, c=1)")
    table.add_row("one Arrow batch", f"{scored.num_rows:,} rows in {batch_s * 1000:.0f} ms, {batch_flagged} flagged")
    table.add_row("pipeline", f"{PIPELINE} v{deployed['version']}: StandardScale -> ONNX logreg -> Threshold")
    table.add_row(
        "try it",
        f'curl -H "Authorization: Bearer $(cat {settings.admin_token_path})" '
        f"{client.url}/ws/default/v2/models/{PIPELINE}",
    )
    table.add_row(
        "experiment",
        f"canary 10% -> 50% -> 100%, then a hot-swap: {experiment['failed']} failed requests",
    )
    table.add_row(
        "monitoring",
        f"{observed['logged']:,} rows logged; assay windows {' -> '.join(observed['statuses'])}; "
        f"chart {observed['chart']}",
    )
    table.add_row(
        "explanation",
        f"IF {' AND '.join(explained['anchor'])} (precision {explained['precision']:.0%}); "
        f"SHAP's top feature: {explained['top_feature']}; chart {explained['chart']}",
    )
    table.add_row("API docs", f"{client.url}/api/v1/docs")
    table.add_row("Ray dashboard", f"http://127.0.0.1:{settings.dashboard_port} (token in ~/.ray/auth_token)")
    table.add_row("stop", "corral down")
    table.add_row("demo took", f"{figures['seconds']:.0f} s")
    console.print(table)
    return figures
