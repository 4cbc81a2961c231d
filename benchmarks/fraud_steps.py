"""The demo pipeline's steps run in-process with Corral's own code: codecs, StandardScale, OnnxModelStep,
Threshold. What bare Serve runs per request, and what the benchmark times without any server."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pyarrow as pa

from pipelines.builtin import StandardScale, Threshold
from pipelines.codecs.arrow import STREAM_TYPE, decode_arrow, encode_arrow
from pipelines.codecs.base import WireFormat
from pipelines.codecs.records import decode_records, encode_records
from pipelines.onnx_step import OnnxModelStep


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

    def __call__(self, table: pa.Table) -> pa.Table:
        return self.threshold(self.model(self.scale(table)))

    def infer(self, body: bytes, content_type: str) -> tuple[bytes, str]:
        """One request body in, (reply body, its Content-Type) out: an Arrow stream in, an Arrow
        stream out; anything else is read as pandas records JSON and answered in kind."""
        if content_type.startswith(STREAM_TYPE):
            table = self(decode_arrow(body, WireFormat.ARROW_STREAM).table)
            payload, headers = encode_arrow(table, WireFormat.ARROW_STREAM)
        else:
            table = self(decode_records(body).table)
            payload, headers = encode_records(table)
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
