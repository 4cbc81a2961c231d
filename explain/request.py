"""The explain request body (`POST .../explain`) and the params each method accepts, validated up front.

Anything wrong is an `InvalidInput` naming the field and how to fix it, raised before any work starts.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from explain.explanation import METHODS
from pipelines.errors import InvalidInput

MIN_REFERENCE_ROWS = 10
MAX_INSTANCES = 1_000
MAX_TIMEOUT_S = 3_600.0


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ValuesReference(_Strict):
    """Reference rows sent in the request (pandas records)."""

    values: list[dict[str, Any]] = Field(min_length=1)


class WindowReference(_Strict):
    """A window of the pipeline's logged inputs (ISO 8601 times)."""

    start: str
    end: str | None = None


class DatasetReference(_Strict):
    """An uploaded dataset: "name" (latest) or "name:version"."""

    dataset: str


Reference = ValuesReference | WindowReference | DatasetReference


class CommonParams(_Strict):
    """Params every method takes."""

    output: str | None = Field(default=None, description="output column to explain; default: see Target")
    target: int | None = Field(default=None, ge=0, description="index into a vector output (class index)")
    variant: str | None = Field(default=None, description="variant to explain; default the live primary")
    timeout_s: float | None = Field(default=None, gt=0, le=MAX_TIMEOUT_S, description="time budget")
    reference_size: int | None = Field(default=None, ge=MIN_REFERENCE_ROWS, le=100_000)
    seed: int = 0


class AnchorsParams(CommonParams):
    threshold: float = Field(default=0.95, gt=0, le=1, description="precision the anchor must reach")
    percentiles: list[float] = Field(
        default=[25.0, 50.0, 75.0],
        min_length=1,
        max_length=20,
        description="where numeric features are cut into the ranges predicates use; add tail cuts "
        "(90, 99) when the explained class lives in the tails",
    )
    beam_size: int = Field(default=1, ge=1, le=10)
    coverage_samples: int = Field(default=10_000, ge=100, le=100_000)
    batch_size: int = Field(default=100, ge=10, le=10_000, description="perturbed rows per predict call")

    @field_validator("percentiles")
    @classmethod
    def _increasing(cls, value: list[float]) -> list[float]:
        if any(not 0 < p < 100 for p in value) or sorted(set(value)) != value:
            raise ValueError("percentiles must be increasing numbers between 0 and 100, e.g. [25, 50, 75, 90, 99]")
        return value


class KernelShapParams(CommonParams):
    nsamples: int | None = Field(default=None, ge=10, le=100_000, description="default 2 * features + 2048")
    sample_size: int = Field(default=20, ge=1, le=MAX_INSTANCES, description="rows explained when global")


class PermutationParams(CommonParams):
    metric: Literal["accuracy", "f1", "mean_squared_error", "mean_absolute_error"] | None = None
    n_repeats: int = Field(default=5, ge=1, le=100)


class AleParams(CommonParams):
    features: list[str] | None = None
    min_bin_points: int = Field(default=4, ge=1, le=1_000)


class PdParams(CommonParams):
    features: list[str] | None = None
    grid_resolution: int = Field(default=20, ge=2, le=200)


PARAMS: dict[str, type[CommonParams]] = {
    "anchors": AnchorsParams,
    "kernel_shap": KernelShapParams,
    "permutation": PermutationParams,
    "ale": AleParams,
    "pd": PdParams,
}
DEFAULT_REFERENCE_SIZE = {"anchors": 1_000, "kernel_shap": 50, "permutation": 1_000, "ale": 1_000, "pd": 500}


class ExplainRequest(_Strict):
    """`{"method", "instances"?, "reference"?, "labels"?, "params"?}` of the public contract."""

    method: str
    instances: list[dict[str, Any]] | None = Field(default=None, max_length=MAX_INSTANCES)
    reference: Reference | None = None
    labels: list[Any] | None = None
    params: dict[str, Any] = Field(default_factory=dict)

    @field_validator("reference", mode="before")
    @classmethod
    def _reference_kind(cls, value: Any) -> Any:
        kinds: dict[str, type[BaseModel]] = {
            "values": ValuesReference,
            "dataset": DatasetReference,
            "start": WindowReference,
        }
        if value is None or isinstance(value, BaseModel):
            return value
        kind = next((k for k in kinds if isinstance(value, dict) and k in value), None)
        if kind is None:
            raise ValueError(
                'use {"values": [records]}, {"start": ISO time, "end": ISO time} (logged inputs) '
                'or {"dataset": "name[:version]"}'
            )
        try:
            return kinds[kind].model_validate(value)
        except ValidationError as exc:
            raise ValueError(_errors(exc)) from None

    @model_validator(mode="after")
    def _method_needs(self) -> ExplainRequest:
        if self.method not in METHODS:
            raise ValueError(f"unknown method {self.method!r}: use one of {', '.join(METHODS)}")
        if self.method == "anchors" and not self.instances:
            raise ValueError("anchors explains rows: send them as `instances` (pandas records)")
        if self.method in ("ale", "pd") and self.instances:
            raise ValueError(
                f"{self.method} is global: it runs over the reference, so leave out `instances` "
                '(send the rows as reference {"values": [...]} instead)'
            )
        if self.instances is not None and len(self.instances) == 0:
            raise ValueError("`instances` is empty: send at least one row, or leave it out for a global method")
        if self.method == "permutation" and not self.labels:
            raise ValueError(
                "permutation needs the true `labels`, one per row of `instances` (or of `reference.values`)"
            )
        if self.labels is not None and any(v is None for v in self.labels):
            raise ValueError("`labels` has nulls: send a true label for every row")
        return self

    def method_params(self) -> CommonParams:
        """The params of this method with their defaults; unknown or out-of-range params are InvalidInput."""
        model = PARAMS[self.method]
        try:
            params = model.model_validate(self.params)
        except ValidationError as exc:
            raise InvalidInput(f"invalid params for {self.method}: {_errors(exc)}. {_allowed(model)}") from None
        if params.reference_size is None:
            params.reference_size = DEFAULT_REFERENCE_SIZE[self.method]
        return params


def parse_request(raw: Any) -> ExplainRequest:
    """Validate a decoded JSON body; every problem is an InvalidInput that says how to fix it."""
    if not isinstance(raw, dict):
        raise InvalidInput(
            'the explain body must be a JSON object: {"method": "anchors", "instances": [{...}], '
            '"reference": {"values": [...]} or {"start": ..., "end": ...} or {"dataset": "name"}}'
        )
    try:
        request = ExplainRequest.model_validate(raw)
    except ValidationError as exc:
        raise InvalidInput(f"invalid explain request: {_errors(exc)}") from None
    request.method_params()
    return request


def _errors(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"] if not str(p).startswith(("function-", "tagged-")))
        message = str(err["msg"]).removeprefix("Value error, ")
        parts.append(f"{where}: {message}" if where else message)
    return "; ".join(dict.fromkeys(parts))


def _allowed(model: type[CommonParams]) -> str:
    return f"Allowed params: {', '.join(model.model_fields)}"
