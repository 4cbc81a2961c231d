"""Explanation benchmark (not a test): seconds per local explanation, Corral next to alibi in-process.

    python -m benchmarks.explain [--repeats 5] [--corral-url http://127.0.0.1:8000]

A 10-feature logistic regression (scikit-learn -> ONNX) is deployed on the running Corral as
pipeline `bench-explain`. For `anchors` and `kernel_shap`, one explanation per instance is timed
end to end over HTTP (request -> explainer app -> predict batches through the router -> reply).
The peer is what a data scientist runs in a notebook: the same alibi explainer, same params and
reference rows, calling onnxruntime in the same process. The first Corral call of each method pays
the fit (and the explainer's cold start); it is reported apart from the warm median.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from cluster.convert import to_onnx

FEATURES = [f"f{i}" for i in range(10)]
PIPELINE = "bench-explain"


def training_data(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, len(FEATURES))).astype(np.float32)
    weights = np.linspace(2.0, 0.1, len(FEATURES))
    y = (x @ weights + rng.normal(scale=0.5, size=n) > 0).astype(np.int64)
    return x, y


def peer_times(onnx: bytes, reference: np.ndarray, instances: np.ndarray) -> dict[str, list[float]]:
    from alibi.explainers import AnchorTabular, KernelShap

    session = ort.InferenceSession(onnx, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name

    def labels(x: np.ndarray) -> np.ndarray:
        return np.asarray(session.run(None, {name: x.astype(np.float32)})[0]).ravel()

    def scores(x: np.ndarray) -> np.ndarray:
        return np.asarray(session.run(None, {name: x.astype(np.float32)})[1])[:, 1]

    anchors = AnchorTabular(labels, FEATURES, seed=0)
    anchors.fit(reference, disc_perc=(25, 50, 75))
    shap = KernelShap(scores, link="identity", feature_names=FEATURES, task="regression", seed=0)
    shap.fit(reference[:50], summarise_background=False)
    out: dict[str, list[float]] = {"anchors": [], "kernel_shap": []}
    for row in instances:
        started = time.perf_counter()
        anchors.explain(row, threshold=0.95, batch_size=100, coverage_samples=10_000)
        out["anchors"].append(time.perf_counter() - started)
        started = time.perf_counter()
        shap.explain(row.reshape(1, -1), nsamples=2 * len(FEATURES) + 2048, l1_reg=False, silent=True)
        out["kernel_shap"].append(time.perf_counter() - started)
    return out


def corral_times(url: str, onnx: bytes, reference: np.ndarray, instances: np.ndarray) -> dict[str, Any]:
    import corral

    client = corral.Client(url)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.onnx"
        path.write_bytes(onnx)
        model = client.upload_model(PIPELINE, path)
    step = {"name": "model", "model": f"{PIPELINE}:{model['version']}", "columns": FEATURES}
    pipeline = client.pipeline(PIPELINE, {"steps": [step]})
    pipeline.deploy()
    records = [dict(zip(FEATURES, map(float, row), strict=True)) for row in reference]
    out: dict[str, Any] = {}
    try:
        for method, params in (("anchors", {"output": "label"}), ("kernel_shap", {"output": "probabilities"})):
            times, calls = [], []
            for row in instances:
                instance = dict(zip(FEATURES, map(float, row), strict=True))
                started = time.perf_counter()
                explanation = pipeline.explain(method, instance, reference=records, **params)
                times.append(time.perf_counter() - started)
                calls.append(explanation.meta["predict_calls"])
            out[method] = {"seconds": times, "predict_calls": calls}
    finally:
        pipeline.undeploy()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5, help="explanations per method (the first is cold)")
    parser.add_argument("--corral-url", default=os.environ.get("CORRAL_URL", "http://127.0.0.1:8000"))
    parser.add_argument("--out", type=Path, default=Path("bench-results") / "explain.json")
    args = parser.parse_args()
    from sklearn.linear_model import LogisticRegression

    x, y = training_data(5_000, seed=0)
    onnx = to_onnx(LogisticRegression().fit(x, y), n_features=len(FEATURES))
    reference, _ = training_data(500, seed=1)
    instances, _ = training_data(args.repeats + 1, seed=2)
    print("peer: alibi + onnxruntime in-process...", flush=True)
    peer = peer_times(onnx, reference, instances)
    print(f"corral at {args.corral_url}...", flush=True)
    corral = corral_times(args.corral_url, onnx, reference, instances)
    results: dict[str, Any] = {"started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "cpus": os.cpu_count(), "methods": {}}
    print(f"{'method':12} {'peer s':>8} {'corral cold s':>14} {'corral warm s':>14} {'ratio':>7} {'calls':>6}")
    for method in ("anchors", "kernel_shap"):
        peer_s = statistics.median(peer[method][1:])
        cold, warm = corral[method]["seconds"][0], statistics.median(corral[method]["seconds"][1:])
        calls = statistics.median(corral[method]["predict_calls"][1:])
        results["methods"][method] = {
            "peer_s": peer[method],
            "corral_s": corral[method]["seconds"],
            "predict_calls": corral[method]["predict_calls"],
            "peer_median_s": peer_s,
            "corral_cold_s": cold,
            "corral_warm_median_s": warm,
            "ratio_peer_over_corral": peer_s / warm,
        }
        print(f"{method:12} {peer_s:8.3f} {cold:14.2f} {warm:14.3f} {peer_s / warm:7.2f}x {calls:6.0f}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"results written to {args.out}")


if __name__ == "__main__":
    main()
