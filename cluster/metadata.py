"""V2 model metadata of a pipeline: what it takes and what it returns, as far as the spec tells."""

from __future__ import annotations

from typing import Any

from pipelines.spec import PipelineSpec
from pipelines.step import import_step_class
from pipelines.validation import ModelSignature


def pipeline_metadata(
    name: str, version: int, spec: PipelineSpec, models: dict[str, ModelSignature]
) -> dict[str, Any]:
    """`inputs`/`outputs` of the primary variant (shape -1 = any); unknowable parts are left out."""
    variant = max(spec.traffic.weights, key=lambda v: spec.traffic.weights[v])
    steps = spec.variants[variant].steps
    inputs: list[dict[str, Any]] = []
    first = steps[0]
    first_model = next((models[f"{variant}.{s.name}"] for s in steps if s.model is not None), None)
    dtype = first_model.inputs[0]["datatype"] if first_model and first_model.inputs else "FP32"
    if first.model is not None:
        sig = models[f"{variant}.{first.name}"]
        if first.columns:
            inputs = [{"name": c, "datatype": dtype, "shape": [-1]} for c in first.columns]
        else:
            inputs = [dict(i) for i in sig.inputs]
    elif first.code is None:
        required = getattr(import_step_class(first.python or ""), "required_columns", None)
        if callable(required):
            inputs = [{"name": c, "datatype": dtype, "shape": [-1]} for c in required(first.config)]
    outputs: list[dict[str, Any]] = []
    for step in steps:
        key = f"{variant}.{step.name}"
        if step.model is not None:
            outputs = [dict(o) for o in models[key].outputs]
        elif step.code is None:
            produced = getattr(import_step_class(step.python or ""), "output_columns", None)
            if callable(produced):
                names = produced(step.config, [o["name"] for o in outputs]) or []
                known = {o["name"]: o for o in outputs}
                outputs = [known.get(n, {"name": n, "datatype": "FP32", "shape": [-1]}) for n in names]
    return {
        "name": name,
        "versions": [str(version)],
        "platform": "corral-pipeline",
        "inputs": inputs,
        "outputs": outputs,
        "parameters": {"variants": sorted(spec.variants), "primary_variant": variant},
    }


def log_columns(metadata: dict[str, Any]) -> set[str]:
    """The `in.*` / `out.*` inference-log columns that metadata says a pipeline takes and returns."""
    return {f"in.{t['name']}" for t in metadata["inputs"]} | {f"out.{t['name']}" for t in metadata["outputs"]}

