"""Batch inference benchmark (not a test): rows/s of `corral batch` next to a hand-written loop.

    python -m benchmarks.batch [--rows 8000000] [--files 8] [--repeats 2] [--workers 2]

Needs a running Corral (`corral up`). The demo pipeline (scale -> logistic regression ONNX ->
threshold) is deployed as `bench-batch`; `--rows` rows of transactions are written as `--files`
Parquet files. Corral runs them through `pipeline.batch` (Ray Data, the pipeline's own step objects);
the peer is what a data scientist writes by hand: for each file, pandas reads it, numpy scales it,
onnxruntime scores it, the threshold is applied and pandas writes inputs + outputs as Parquet.
Both read the same files and write the same columns in the same run, alternating; rows/s and the
ratio are reported (this machine is shared: compare ratios, not absolute times).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pandas as pd

from cluster.convert import to_onnx
from cluster.sdk import Client
from examples.fraud import FEATURES, LABEL, fraud_pipeline_spec, make_transactions, train_fraud_model

PIPELINE = "bench-batch"
RESULTS = Path(__file__).resolve().parent / "results"


def write_inputs(root: Path, rows: int, files: int) -> None:
    """`rows` transactions in `files` Parquet files (one generated block, tiled, so this stays quick)."""
    block = make_transactions(min(rows // files, 500_000), seed=7)[FEATURES]
    per_file = rows // files
    for index in range(files):
        repeats = -(-per_file // len(block))
        frame = pd.concat([block] * repeats, ignore_index=True).iloc[:per_file]
        frame.to_parquet(root / f"part-{index:03d}.parquet", index=False)


def peer(onnx: bytes, mean: list[float], std: list[float], threshold: float, inputs: Path, out: Path) -> int:
    """The hand-written loop: pandas + numpy + onnxruntime, one file at a time."""
    session = ort.InferenceSession(onnx, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    mu, sigma = np.asarray(mean, np.float32), np.asarray(std, np.float32)
    out.mkdir(parents=True)
    rows = 0
    for path in sorted(inputs.glob("*.parquet")):
        frame = pd.read_parquet(path)
        x = ((frame[FEATURES].to_numpy(np.float32) - mu) / sigma).astype(np.float32)
        label, probabilities = session.run(None, {name: x})
        frame["label"] = label
        frame["probabilities"] = list(probabilities)
        frame[LABEL] = (probabilities[:, 1] > threshold).astype(np.int64)
        frame.to_parquet(out / path.name, index=False)
        rows += len(frame)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=8_000_000)
    parser.add_argument("--files", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batch-rows", type=int, default=None)
    args = parser.parse_args()

    client = Client()
    model, mean, std = train_fraud_model(make_transactions(4000, seed=3), kind="logreg")
    info = client.upload_model(PIPELINE, model, n_features=len(FEATURES))
    spec = fraud_pipeline_spec(f"{PIPELINE}:{info['version']}", mean, std)
    client.pipeline(PIPELINE, spec).deploy()
    onnx = to_onnx(model, n_features=len(FEATURES))
    threshold = float(spec["steps"][2]["config"]["threshold"])

    runs: dict[str, list[float]] = {"corral": [], "peer": []}
    with tempfile.TemporaryDirectory(prefix="corral-bench-batch-") as tmp:
        inputs = Path(tmp) / "in"
        inputs.mkdir()
        write_inputs(inputs, args.rows, args.files)
        rows = args.files * (args.rows // args.files)
        for repeat in range(args.repeats):
            started = time.perf_counter()
            done = peer(onnx, mean, std, threshold, inputs, Path(tmp) / f"peer-{repeat}")
            runs["peer"].append(done / (time.perf_counter() - started))
            started = time.perf_counter()
            result = client.pipeline(PIPELINE).batch(
                inputs, Path(tmp) / f"corral-{repeat}", workers=args.workers, batch_rows=args.batch_rows, poll_s=0.1
            )
            wall = time.perf_counter() - started
            assert result.rows == done == rows, (result, done)
            runs["corral"].append(result.rows / wall)
            print(
                f"run {repeat + 1}: corral {runs['corral'][-1]:,.0f} rows/s (job {result.rows_per_s:,.0f}), "
                f"peer {runs['peer'][-1]:,.0f} rows/s"
            )
    corral_best, peer_best = max(runs["corral"]), max(runs["peer"])
    report: dict[str, Any] = {
        "date": date.today().isoformat(),
        "rows": rows,
        "files": args.files,
        "workers": args.workers,
        "batch_rows": args.batch_rows,
        "cpus": os.cpu_count(),
        "corral_rows_per_s": runs["corral"],
        "peer_rows_per_s": runs["peer"],
        "corral_best": corral_best,
        "peer_best": peer_best,
        "ratio_corral_to_peer": corral_best / peer_best,
        "median_ratio": statistics.median(c / p for c, p in zip(runs["corral"], runs["peer"], strict=True)),
    }
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"batch-{report['date']}.json"
    path.write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))
    print(f"saved {path}")


if __name__ == "__main__":
    main()
