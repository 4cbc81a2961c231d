"""One function per method: run alibi on encoded rows, return the contract's `data` as plain JSON values.

alibi is imported lazily (it takes seconds) and only inside these functions.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from explain.features import FeatureSpace
from explain.predictor import Predictor
from explain.request import AleParams, AnchorsParams, KernelShapParams, PdParams, PermutationParams
from pipelines.errors import CorralError, InvalidInput

CLASSIFICATION_METRICS = ("accuracy", "f1")


@dataclass
class MethodResult:
    data: dict[str, Any]
    meta: dict[str, Any] = field(default_factory=dict)


@contextmanager
def quiet() -> Iterator[None]:
    """alibi and shap warn about things the request already settled (scalar outputs, l1_reg...)."""
    loggers = [logging.getLogger(n) for n in ("alibi", "shap")]
    levels = [lg.level for lg in loggers]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for lg in loggers:
            lg.setLevel(logging.ERROR)
        try:
            yield
        finally:
            for lg, level in zip(loggers, levels, strict=True):
                lg.setLevel(level)


def fit_anchors(predictor: Predictor, space: FeatureSpace, reference: np.ndarray, params: AnchorsParams) -> Any:
    from alibi.exceptions import PredictorCallError
    from alibi.explainers import AnchorTabular

    with quiet():
        try:
            explainer = AnchorTabular(
                predictor.labels, space.names, categorical_names=space.category_map, seed=params.seed
            )
        except PredictorCallError as exc:  # alibi's trial call hides the InvalidInput/BudgetExceeded that says why
            if isinstance(exc.__cause__, CorralError):
                raise exc.__cause__ from None
            raise
        explainer.fit(reference, disc_perc=tuple(params.percentiles))
    return explainer


def anchors(
    explainer: Any, predictor: Predictor, space: FeatureSpace, rows: np.ndarray, params: AnchorsParams
) -> MethodResult:
    results = []
    for i, row in enumerate(rows):
        if predictor.progress is not None:
            predictor.progress.stage = f"anchoring instance {i + 1} of {len(rows)}"
        with quiet():
            explanation = explainer.explain(
                row,
                threshold=params.threshold,
                beam_size=params.beam_size,
                coverage_samples=params.coverage_samples,
                batch_size=params.batch_size,
            )
        results.append(
            {
                "anchor": [str(p) for p in explanation.data["anchor"]],
                "precision": float(np.asarray(explanation.data["precision"]).mean()),
                "coverage": float(explanation.data["coverage"]),
                "prediction": _plain(
                    predictor.label_of(int(np.asarray(explanation.data["raw"]["prediction"]).ravel()[0]))
                ),
            }
        )
    return MethodResult({**results[0], "instances": results})


def fit_kernel_shap(predictor: Predictor, space: FeatureSpace, background: np.ndarray, params: KernelShapParams) -> Any:
    from alibi.explainers import KernelShap

    with quiet():
        explainer = KernelShap(
            predictor.scores, link="identity", feature_names=space.names, task="regression", seed=params.seed
        )
        explainer.fit(background, summarise_background=False)
    return explainer


def kernel_shap(
    explainer: Any, predictor: Predictor, space: FeatureSpace, rows: np.ndarray, params: KernelShapParams
) -> MethodResult:
    if predictor.progress is not None:
        predictor.progress.stage = f"sampling coalitions for {len(rows)} rows"
    nsamples = params.nsamples or 2 * len(space.names) + 2048
    with quiet():
        explanation = explainer.explain(rows, nsamples=nsamples, l1_reg=False, silent=True)
    values = np.asarray(explanation.shap_values[0], dtype=np.float64).reshape(len(rows), len(space.names))
    mean_abs = np.abs(values).mean(axis=0)
    return MethodResult(
        {
            "feature_names": space.names,
            "shap_values": values.tolist(),
            "expected_value": float(np.asarray(explanation.expected_value).ravel()[0]),
            "importances": _ranked(space.names, mean_abs),
            "predictions": np.asarray(explanation.data["raw"]["raw_prediction"], dtype=np.float64).ravel().tolist(),
        },
        {"nsamples": nsamples},
    )


def permutation(
    predictor: Predictor, space: FeatureSpace, rows: np.ndarray, labels: list[Any], params: PermutationParams
) -> MethodResult:
    from alibi.explainers import PermutationImportance
    from sklearn import metrics

    if len(labels) != len(rows):
        raise InvalidInput(
            f"{len(labels)} labels for {len(rows)} rows: send one label per row of `instances` "
            "(or of `reference.values` when there are no instances)"
        )
    metric = params.metric or ("accuracy" if _label_like(labels) else "mean_squared_error")
    classification = metric in CLASSIFICATION_METRICS
    if predictor.progress is not None:
        predictor.progress.stage = f"shuffling {len(space.names)} features x {params.n_repeats} repeats"
    if classification:
        predict = predictor.labels
        y_true = predictor.true_codes(labels)
    else:
        predict = predictor.scores
        try:
            y_true = np.asarray(labels, dtype=np.float64)
        except (TypeError, ValueError):
            raise InvalidInput(f"metric {metric} needs numeric labels; got {labels[:3]}...") from None
    functions = {"score_fns": [metric]} if classification else {"loss_fns": [metric]}
    with quiet():
        explainer = PermutationImportance(predict, feature_names=space.names, verbose=False, **functions)
        baseline = float(getattr(metrics, f"{metric}_score" if classification else metric)(y_true, predict(rows)))
        explanation = explainer.explain(rows, y_true, n_repeats=params.n_repeats, kind="difference", method="estimate")
    # alibi gives {"mean", "std", "samples"} per feature, but a bare number when there is one repeat
    stats = [s if isinstance(s, dict) else {"mean": s, "std": 0.0} for s in explanation.data["feature_importance"][0]]
    ranked = sorted(
        (
            {"feature": name, "importance": float(s["mean"]), "std": float(s["std"])}
            for name, s in zip(space.names, stats, strict=True)
        ),
        key=lambda item: -float(item["importance"]),  # type: ignore[arg-type]
    )
    return MethodResult(
        {"feature_names": space.names, "importances": ranked, "metric": metric, "baseline": baseline},
        {"metric": metric, "rows": len(rows)},
    )


def ale(predictor: Predictor, space: FeatureSpace, rows: np.ndarray, params: AleParams) -> MethodResult:
    from alibi.explainers import ALE

    names = params.features or space.names
    indices = [space.index(n) for n in names]
    numeric = [i for i in indices if i not in space.categories]
    skipped = [space.names[i] for i in indices if i in space.categories]
    values: dict[int, list[Any]] = {}
    effects: dict[int, list[float]] = {}
    if numeric:
        if predictor.progress is not None:
            predictor.progress.stage = f"accumulating effects of {len(numeric)} features"
        with quiet():
            explainer = ALE(_column_vector(predictor), feature_names=space.names, target_names=["target"])
            explanation = explainer.explain(rows, features=numeric, min_bin_points=params.min_bin_points)
        for i, grid, effect in zip(
            numeric, explanation.data["feature_values"], explanation.data["ale_values"], strict=True
        ):
            values[i] = np.asarray(grid, dtype=np.float64).tolist()
            effects[i] = np.asarray(effect, dtype=np.float64)[:, 0].tolist()
    meta = {"skipped": {n: "categorical: ALE needs ordered values (use pd)" for n in skipped}} if skipped else {}
    return MethodResult(
        {
            "feature_names": names,
            "values": [values.get(i, []) for i in indices],
            "effects": [effects.get(i, []) for i in indices],
        },
        meta,
    )


def partial_dependence(predictor: Predictor, space: FeatureSpace, rows: np.ndarray, params: PdParams) -> MethodResult:
    from alibi.explainers import PartialDependence

    names = params.features or space.names
    indices = [space.index(n) for n in names]
    if predictor.progress is not None:
        predictor.progress.stage = f"varying {len(indices)} features over a grid of {params.grid_resolution}"
    with quiet():
        explainer = PartialDependence(
            _column_vector(predictor),
            feature_names=space.names,
            categorical_names=space.category_map or None,
            target_names=["target"],
        )
        explanation = explainer.explain(rows, features=indices, kind="average", grid_resolution=params.grid_resolution)
    values, effects = [], []
    for i, grid, effect in zip(indices, explanation.data["feature_values"], explanation.data["pd_values"], strict=True):
        grid = np.asarray(grid)
        if i in space.categories:
            values.append([_plain(space.categories[i][int(c)]) for c in grid])
        else:
            values.append(grid.astype(np.float64).tolist())
        effects.append(np.asarray(effect, dtype=np.float64)[0].tolist())
    return MethodResult({"feature_names": names, "values": values, "effects": effects})


def _column_vector(predictor: Predictor) -> Any:
    def predict(matrix: np.ndarray) -> np.ndarray:
        return predictor.scores(matrix).reshape(-1, 1)

    return predict


def _ranked(names: list[str], importance: np.ndarray) -> list[dict[str, Any]]:
    order = np.argsort(-importance, kind="stable")
    return [{"feature": names[i], "importance": float(importance[i])} for i in order]


def _label_like(labels: list[Any]) -> bool:
    return all(isinstance(v, bool | int | str) for v in labels)


def _plain(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value
