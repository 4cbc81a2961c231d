"""The hand-written peer: FastAPI + uvicorn + onnxruntime in one process, no framework in between.

Same work as the fraud pipeline: standard-scale FEATURES -> ONNX logistic regression -> threshold
P(fraud) into `is_fraud`. `POST /infer` takes pandas records JSON or an Arrow stream and replies in
kind. Run: `python -m benchmarks.peer --port 18001 --model fraud.onnx --mean m1 ... --std s1 ...`
or `python -m benchmarks.peer --port 18001 --config peer.json` ({"model", "mean", "std"}).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnxruntime as ort
import orjson
import pyarrow as pa
from fastapi import FastAPI, Request, Response

from examples.fraud import FEATURES

ARROW_STREAM = "application/vnd.apache.arrow.stream"
THRESHOLD = 0.5


class FraudModel:
    """Scale -> ONNX model -> threshold, vectorised over a [N, len(FEATURES)] array."""

    def __init__(self, onnx_path: str | Path, mean: Sequence[float], std: Sequence[float]) -> None:
        if len(mean) != len(FEATURES) or len(std) != len(FEATURES):
            raise ValueError(f"mean and std need {len(FEATURES)} values each ({FEATURES})")
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
        self.input = self.session.get_inputs()[0].name
        self.mean = np.asarray(mean, dtype=np.float64)
        self.std = np.asarray(std, dtype=np.float64)

    def __call__(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Return (label int64 [N], probabilities float32 [N, 2], is_fraud int64 [N])."""
        scaled = ((X - self.mean) / self.std).astype(np.float32)
        label, proba = self.session.run(None, {self.input: scaled})
        return label, proba, (proba[:, 1] > THRESHOLD).astype(np.int64)


def records_infer(model: FraudModel, body: bytes) -> bytes:
    rows = orjson.loads(body)
    X = np.array([[row[name] for name in FEATURES] for row in rows], dtype=np.float64)
    label, proba, is_fraud = model(X)
    reply = [
        {"label": lab, "probabilities": p, "is_fraud": f}
        for lab, p, f in zip(label.tolist(), proba.tolist(), is_fraud.tolist(), strict=True)
    ]
    return orjson.dumps(reply)


def arrow_infer(model: FraudModel, body: bytes) -> bytes:
    table = pa.ipc.open_stream(body).read_all()
    X = np.column_stack([table.column(name).to_numpy().astype(np.float64) for name in FEATURES])
    label, proba, is_fraud = model(X)
    width = proba.shape[1]
    out = pa.table(
        {
            "label": pa.array(label),
            "probabilities": pa.FixedSizeListArray.from_arrays(pa.array(proba.reshape(-1)), width),
            "is_fraud": pa.array(is_fraud),
        }
    )
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, out.schema) as writer:
        writer.write_table(out)
    return sink.getvalue().to_pybytes()


def create_app(model: FraudModel) -> FastAPI:
    app = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)

    @app.get("/health")
    async def health() -> Response:
        return Response(b"ok", media_type="text/plain")

    @app.post("/infer")
    async def infer(request: Request) -> Response:
        body = await request.body()
        content_type = request.headers.get("content-type", "")
        try:
            if content_type.startswith(ARROW_STREAM):
                return Response(arrow_infer(model, body), media_type=ARROW_STREAM)
            return Response(records_infer(model, body), media_type="application/json")
        except (ValueError, KeyError, TypeError, pa.ArrowException) as exc:
            return Response(orjson.dumps({"error": str(exc)}), status_code=400, media_type="application/json")

    return app


def main(argv: Sequence[str] | None = None) -> None:
    import uvicorn

    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=formatter)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=18001)
    parser.add_argument("--config", help='JSON file {"model": path, "mean": [...], "std": [...]}')
    parser.add_argument("--model", help="ONNX file")
    parser.add_argument("--mean", type=float, nargs="+")
    parser.add_argument("--std", type=float, nargs="+")
    args = parser.parse_args(argv)
    if args.config:
        config = json.loads(Path(args.config).read_text())
        path, mean, std = config["model"], config["mean"], config["std"]
    elif args.model and args.mean and args.std:
        path, mean, std = args.model, args.mean, args.std
    else:
        parser.error("pass --config, or --model with --mean and --std")
    app = create_app(FraudModel(path, mean, std))
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
