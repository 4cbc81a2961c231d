"""Static checks of a pipeline spec before it becomes a version: steps import, columns line up."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pipelines.errors import InvalidInput
from pipelines.spec import PipelineSpec, StepSpec
from pipelines.step import build_step, import_step_class


@dataclass(frozen=True)
class ModelSignature:
    """Inputs and outputs of a registry model: lists of {name, datatype, shape}."""

    inputs: list[dict[str, Any]]
    outputs: list[dict[str, Any]]


def validate_pipeline(
    spec: PipelineSpec,
    models: dict[str, ModelSignature],
    uploaded_steps: set[str] = frozenset(),  # type: ignore[assignment]
) -> None:
    """Raise InvalidInput naming the variant and step of the first problem found.

    `models` maps "variant.step" to the signature of its resolved model; `uploaded_steps` holds the
    "variant.step" keys whose class comes from uploaded code (checked by parsing, never imported here).
    """
    for variant, vspec in spec.variants.items():
        columns: list[str] | None = None  # what flows between steps, when it can be known statically
        for step in vspec.steps:
            key = f"{variant}.{step.name}"
            if step.model is not None:
                columns = _check_model_step(key, step, models[key], columns)
            elif key in uploaded_steps:
                columns = None
            else:
                columns = _check_python_step(key, step, columns)


def _check_python_step(key: str, step: StepSpec, columns: list[str] | None) -> list[str] | None:
    assert step.python is not None
    try:
        cls = import_step_class(step.python)
        build_step(step.python, step.config)  # a config the class rejects fails now, not at deploy
    except InvalidInput as exc:
        raise InvalidInput(f"step {key!r}: {exc.message}") from exc
    required = getattr(cls, "required_columns", None)
    if columns is not None and callable(required):
        missing = [c for c in required(step.config) if c not in columns]
        if missing:
            raise InvalidInput(
                f"step {key!r} needs columns {missing} but the step before it produces {columns}: "
                "fix the step's config or the step before it"
            )
    produced = getattr(cls, "output_columns", None)
    return produced(step.config, columns) if callable(produced) else None  # type: ignore[no-any-return]


def _check_model_step(
    key: str, step: StepSpec, signature: ModelSignature, columns: list[str] | None
) -> list[str]:
    inputs = signature.inputs
    single_matrix = len(inputs) == 1 and len(inputs[0]["shape"]) == 2
    if step.columns is not None:
        if not single_matrix:
            raise InvalidInput(
                f"step {key!r} lists 'columns' but model {step.model!r} does not take one 2-D input "
                f"(inputs: {[i['name'] for i in inputs]}); remove 'columns'"
            )
        width = inputs[0]["shape"][1]
        if width != -1 and width != len(step.columns):
            raise InvalidInput(
                f"step {key!r} lists {len(step.columns)} columns but model {step.model!r} takes {width} "
                "features: list exactly that many"
            )
        needed = list(step.columns)
    elif single_matrix:
        needed = []  # fed from all numeric columns or a passed-through tensor
    else:
        needed = [i["name"] for i in inputs]
    if columns is not None:
        missing = [c for c in needed if c not in columns]
        if missing:
            raise InvalidInput(
                f"model step {key!r} needs columns {missing} but the step before it produces {columns}"
            )
    return [o["name"] for o in signature.outputs]
