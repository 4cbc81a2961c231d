"""The demo pipeline's steps run in-process with Corral's own code: codecs, StandardScale, OnnxModelStep,
Threshold. What bare Serve runs per request, and what the benchmark times without any server."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pipelines.builtin import StandardScale, Threshold
from pipelines.codecs import decode_request, encode_response
from pipelines.codecs.arrow import STREAM_TYPE
from pipelines.codecs.records import decode_records
from pipelines.frame import Data
from pipelines.onnx_step import OnnxModelStep
from pipelines.step import run_step_sync


class FraudSteps:
    """scale -> ONNX model -> threshold, built as Corral builds the steps of the demo spec."""

    def __init__(self, model: bytes, scale: dict[str, Any], columns: Sequence[str], threshold: dict[str, Any]) -> None:
        self.scale = StandardScale(scale)
        # One onnxruntime thread, as Corral gives a step of fewer than 2 CPUs.
        self.model = OnnxModelStep(model, name="model", columns=list(columns), num_threads=1)
        self.model.warm_up()
        self.threshold = Threshold(threshold)

    @classmethod
    def from_spec(cls, model: bytes, spec: dict[str, Any]) -> FraudSteps:
        """The steps of the demo pipeline `spec` (examples.fraud.fraud_pipeline_spec's dict)."""
        configs = step_configs(spec)
        return cls(model, configs["scale"], configs["columns"], configs["threshold"])

    def __call__(self, data: Data) -> Data:
        """The three steps as Corral's inline segment runs them (a Frame takes the fast path)."""
        for name, step in (("pre", self.scale), ("model", self.model), ("post", self.threshold)):
            data = run_step_sync(step, data, step_name=name)
        return data

    def infer(self, body: bytes, content_type: str) -> tuple[bytes, str]:
        """One request body in, (reply body, its Content-Type) out: an Arrow stream in, an Arrow
        stream out; anything else is read as pandas records JSON and answered in kind. The codecs
        and paths of Corral's router (frames where the data allows)."""
        if content_type.startswith(STREAM_TYPE):
            decoded = decode_request(body, STREAM_TYPE, {}, max_bytes=1 << 30)
        else:
            decoded = decode_records(body)
        payload, headers = encode_response(
            self(decoded.data), decoded, model_name="fraud", model_version="1", parameters={}
        )
        return payload, headers["content-type"]


def step_configs(spec: dict[str, Any]) -> dict[str, Any]:
    """The scale config, model columns and threshold config of the demo spec (steps pre, model, post)."""
    steps = {step["name"]: step for step in spec["steps"]}
    try:
        return {
            "scale": steps["pre"]["config"],
            "columns": steps["model"]["columns"],
            "threshold": steps["post"]["config"],
        }
    except KeyError as exc:
        raise ValueError(f"not the fraud demo spec (steps pre, model, post): missing {exc}") from None
