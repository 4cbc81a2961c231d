"""Runs one explanation: reference and rows -> features -> target -> method -> `Explanation`.

Pure: the pipeline is a `predict(table) -> table` function, so the same code explains through a Serve
handle in a cluster or an in-process function in a unit test. Fitted explainers (anchors, kernel_shap)
are kept in an `ExplainerCache` under a key the caller scopes (pipeline version, variant).
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from explain.explanation import Explanation
from explain.features import FeatureSpace, drop_incomplete, sample_rows
from explain.methods import (
    CLASSIFICATION_METRICS,
    ale,
    anchors,
    fit_anchors,
    fit_kernel_shap,
    kernel_shap,
    partial_dependence,
    permutation,
)
from explain.predictor import Predictor, PredictTable, Progress, Target
from explain.request import (
    MIN_REFERENCE_ROWS,
    AleParams,
    AnchorsParams,
    CommonParams,
    ExplainRequest,
    KernelShapParams,
    PdParams,
    PermutationParams,
)
from pipelines.errors import InvalidInput


@dataclass
class Fitted:
    explainer: Any
    predictor: Predictor
    space: FeatureSpace


class ExplainerCache:
    """Fitted explainers, least recently used out first; `keep_scope` drops those of other versions."""

    def __init__(self, max_entries: int = 8) -> None:
        self.max_entries = max_entries
        self.entries: OrderedDict[tuple[Any, ...], Fitted] = OrderedDict()
        self.lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def keep_scope(self, scope: tuple[Any, ...]) -> None:
        with self.lock:
            for key in [k for k in self.entries if k[: len(scope)] != scope]:
                del self.entries[key]

    def get(self, key: tuple[Any, ...]) -> Fitted | None:
        with self.lock:
            fitted = self.entries.get(key)
            if fitted is not None:
                self.entries.move_to_end(key)
                self.hits += 1
            else:
                self.misses += 1
            return fitted

    def put(self, key: tuple[Any, ...], fitted: Fitted) -> None:
        with self.lock:
            self.entries[key] = fitted
            while len(self.entries) > self.max_entries:
                self.entries.popitem(last=False)

    def stats(self) -> dict[str, int]:
        return {"entries": len(self.entries), "hits": self.hits, "misses": self.misses}


def explain(
    request: ExplainRequest,
    reference: pa.Table,
    predict: PredictTable,
    progress: Progress,
    cache: ExplainerCache | None = None,
    scope: tuple[Any, ...] = (),
) -> Explanation:
    """Explain `predict` (the whole pipeline) as `request` asks, against `reference` (its input rows).

    Raises InvalidInput for rows or references that do not fit, BudgetExceeded past the time budget.
    """
    params = request.method_params()
    assert params.reference_size is not None
    complete, dropped = drop_incomplete(reference)
    if complete.num_rows < MIN_REFERENCE_ROWS:
        raise InvalidInput(
            f"the reference has {complete.num_rows} complete rows; explanations need at least {MIN_REFERENCE_ROWS}: "
            "send more rows in reference.values, widen the logged window, or use a larger dataset"
        )
    sampled = sample_rows(complete, params.reference_size, params.seed)
    space = FeatureSpace.of(sampled, complete)  # categories of every reference row, not only the sampled ones
    background = space.encode(sampled, "reference rows")
    rows = _rows(request, params, space, complete)
    progress.stage = "fitting"

    categories = tuple((i, tuple(c)) for i, c in space.category_map.items())
    fit_params = tuple(params.percentiles) if isinstance(params, AnchorsParams) else ()
    key = (
        *scope,
        request.method,
        params.output,
        params.target,
        params.seed,
        _fingerprint(sampled),
        categories,
        fit_params,
    )
    fitted = cache.get(key) if cache is not None and request.method in ("anchors", "kernel_shap") else None
    cached = fitted is not None
    if fitted is None:
        predictor = Predictor(predict, space)
        fitted = Fitted(None, predictor, space)
    predictor = fitted.predictor
    with predictor.lock:
        predictor.progress = progress
        predictor.predict_table = predict
        if predictor.target is None:
            predictor.target = Target.choose(
                predictor.outputs(background[:1]), params.output, params.target, _wants_labels(request, params)
            )
        result = _run(request, params, fitted, background, rows)
        predictor.progress = None
    if cache is not None and not cached and fitted.explainer is not None:
        cache.put(key, fitted)
    meta = {
        "method": request.method,
        "params": params.model_dump(exclude_none=True),
        "output": predictor.target.describe(),
        "feature_names": space.names,
        "categorical": {space.names[i]: [str(v) for v in c] for i, c in space.categories.items()},
        "instances": len(rows) if request.instances else 0,
        "rows_explained": len(rows),
        "reference_rows": sampled.num_rows,
        "reference_rows_dropped": dropped,
        "fitted_from_cache": cached,
        **result.meta,
        **progress.report(),
    }
    meta.pop("stage", None)
    return Explanation(meta=meta, data=result.data)


def _wants_labels(request: ExplainRequest, params: Any) -> bool:
    if request.method == "anchors":
        return True
    if isinstance(params, PermutationParams):
        return params.metric in CLASSIFICATION_METRICS or (
            params.metric is None and all(isinstance(v, bool | int | str) for v in request.labels or [])
        )
    return False


def _rows(request: ExplainRequest, params: CommonParams, space: FeatureSpace, complete: pa.Table) -> np.ndarray:
    """The rows the method explains: the instances, else (global) the reference or a sample of it."""
    if request.instances:
        return space.encode(pa.Table.from_pylist(request.instances), "instances")
    if isinstance(params, KernelShapParams):
        return space.encode(sample_rows(complete, params.sample_size, params.seed + 1), "reference rows")
    if isinstance(params, PermutationParams):
        if complete.num_rows != (request.labels and len(request.labels)):
            raise InvalidInput(
                f"{len(request.labels or [])} labels for {complete.num_rows} complete reference rows: send the "
                "labelled rows as `instances`, one label per row, with no nulls"
            )
        return space.encode(complete, "reference rows")  # labels line up with every reference row
    assert params.reference_size is not None
    return space.encode(sample_rows(complete, params.reference_size, params.seed), "reference rows")


def _run(request: ExplainRequest, params: Any, fitted: Fitted, background: np.ndarray, rows: np.ndarray) -> Any:
    predictor, space = fitted.predictor, fitted.space
    if isinstance(params, AnchorsParams):
        if fitted.explainer is None:
            fitted.explainer = fit_anchors(predictor, space, background, params)
        return anchors(fitted.explainer, predictor, space, rows, params)
    if isinstance(params, KernelShapParams):
        if fitted.explainer is None:
            fitted.explainer = fit_kernel_shap(predictor, space, background, params)
        return kernel_shap(fitted.explainer, predictor, space, rows, params)
    if isinstance(params, PermutationParams):
        assert request.labels is not None
        return permutation(predictor, space, rows, request.labels, params)
    if isinstance(params, AleParams):
        return ale(predictor, space, rows, params)
    assert isinstance(params, PdParams)
    return partial_dependence(predictor, space, rows, params)


def _fingerprint(table: pa.Table) -> str:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return hashlib.sha256(sink.getvalue().to_pybytes()).hexdigest()[:16]
