"""The demo's experiment: a challenger as a 10% canary beside a shadow, a ramp, then a hot-swap."""

from __future__ import annotations

import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pandas as pd
from rich.console import Console
from rich.table import Table

from cluster.sdk import Client
from examples.fraud import FEATURES, fraud_pipeline_spec, make_transactions, train_fraud_model

EXPERIMENT = "fraud-ab"
STAGES = ((90, 10), (50, 50), (0, 100))


def run_experiment(
    console: Console, client: Client, control_ref: str, mean: list[float], std: list[float], requests: int = 200
) -> dict[str, Any]:
    """Deploy control vs challenger (+ a shadow), ramp the challenger up, hot-swap its model.

    Returns the observed split per stage and the failed-request count (always 0 when all is well).
    """
    train = make_transactions(20_000, seed=2)
    gbdt, mean2, std2 = train_fraud_model(train, kind="gbdt")
    logreg2, _, _ = train_fraud_model(train, kind="logreg")  # same data, so the same scaling
    challenger = client.upload_model("fraud", gbdt, n_features=len(FEATURES))
    candidate = client.upload_model("fraud", logreg2, n_features=len(FEATURES))
    challenger_ref = f"fraud:{challenger['version']}"
    candidate_ref = f"fraud:{candidate['version']}"
    spec = {
        "variants": {
            "control": fraud_pipeline_spec(control_ref, mean, std),
            "challenger": fraud_pipeline_spec(challenger_ref, mean2, std2),
            "shadow": fraud_pipeline_spec(candidate_ref, mean2, std2),
        },
        "traffic": {"weights": {"control": 90, "challenger": 10}, "shadows": ["shadow"]},
    }
    console.print(
        f"control {control_ref} (logreg) vs challenger {challenger_ref} (GBDT) at 90/10, "
        f"shadow {candidate_ref} sees every request"
    )
    pipeline = client.pipeline(EXPERIMENT, spec)
    with console.status("deploying three variants (one deployment per step each)…"):
        pipeline.deploy()
    rows = make_transactions(requests, seed=11)[FEATURES]
    splits: dict[str, Counter[str]] = {}
    for control, share in STAGES:
        if (control, share) != STAGES[0]:
            with console.status(f"ramping the challenger to {share}% (routers reconfigure in place)…"):
                pipeline.set_traffic({"control": control, "challenger": share}, shadows=["shadow"])
        splits[f"{control}/{share}"] = _send(client, rows)
    with console.status(f"hot-swapping the challenger's model to {candidate_ref}…"):
        t0 = time.perf_counter()
        swapped = pipeline.swap_model("model", candidate_ref, variant="challenger")
        swap_s = time.perf_counter() - t0
    splits["after swap"] = _send(client, rows)
    failed = sum(counts["failed"] for counts in splits.values())

    table = Table(title=f"experiment on {EXPERIMENT}: observed split of {requests} requests per stage")
    for column in ("weights control/challenger", "control", "challenger", "failed"):
        table.add_column(column)
    for stage, counts in splits.items():
        table.add_row(stage, str(counts["control"]), str(counts["challenger"]), str(counts["failed"]))
    console.print(table)
    console.print(
        f"hot-swap to {swapped['model']} took {swap_s:.1f} s (new pipeline version {swapped['version']}; "
        f"`corral pipelines deploy {EXPERIMENT} --version {swapped['version'] - 1}` rolls back); "
        f"failed requests over the whole experiment: {failed}"
    )
    pipeline.undeploy()
    return {"splits": {k: dict(v) for k, v in splits.items()}, "failed": failed, "swap_s": swap_s}


def _send(client: Client, rows: pd.DataFrame, concurrency: int = 8) -> Counter[str]:
    """Variant counts of single-row requests sent by `concurrency` clients ("failed": non-200)."""
    url = f"{client.url}/ws/{client.workspace}/v2/models/{EXPERIMENT}/infer"
    headers = {**client._http.headers, "content-type": "application/json; format=pandas-records"}
    records = rows.to_dict(orient="records")
    with httpx.Client(timeout=30) as http:

        def one(row: dict[str, Any]) -> str:
            reply = http.post(url, json=[row], headers=headers)
            return reply.headers.get("x-corral-variant", "") if reply.status_code == 200 else "failed"

        with ThreadPoolExecutor(concurrency) as pool:
            return Counter(pool.map(one, records))
