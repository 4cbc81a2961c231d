"""cluster.convert: every supported model kind converts and predicts like the original in onnxruntime."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pandas as pd
import pytest
from sklearn.datasets import make_classification, make_regression
from sklearn.ensemble import GradientBoostingClassifier, RandomForestRegressor
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from cluster.convert import describe_onnx, to_onnx
from pipelines.errors import InvalidInput

N_FEATURES = 6
RTOL = 1e-4
ATOL = 1e-5  # float32 inference: probabilities near 0 carry absolute, not relative, error


def _classification(n_classes: int = 2) -> tuple[np.ndarray, np.ndarray]:
    X, y = make_classification(
        n_samples=300, n_features=N_FEATURES, n_informative=4, n_classes=n_classes, random_state=0
    )
    return X.astype(np.float32), y  # float32 data: the original and ONNX see the same numbers


def _regression() -> tuple[np.ndarray, np.ndarray]:
    X, y = make_regression(n_samples=300, n_features=N_FEATURES, noise=0.1, random_state=0)
    return X.astype(np.float32), y


def _run(data: bytes, X: np.ndarray | pd.DataFrame) -> dict[str, np.ndarray]:
    session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(None, {"input": np.asarray(X, dtype=np.float32)}), strict=True))


def _assert_classifier(model: Any, X: np.ndarray, **kwargs: Any) -> None:
    data = to_onnx(model, **kwargs)
    out = _run(data, X[:50])
    assert set(out) == {"label", "probabilities"}
    assert out["label"].dtype == np.int64 and out["label"].shape == (50,)
    assert out["probabilities"].dtype == np.float32
    np.testing.assert_allclose(out["probabilities"], model.predict_proba(X[:50]), rtol=RTOL, atol=ATOL)
    np.testing.assert_array_equal(out["label"], model.predict(X[:50]))


def _assert_regressor(model: Any, X: np.ndarray, **kwargs: Any) -> None:
    out = _run(to_onnx(model, **kwargs), X[:50])
    (pred,) = out.values()
    expected = model.predict(X[:50])
    np.testing.assert_allclose(
        pred.reshape(expected.shape), expected, rtol=RTOL, atol=ATOL * np.abs(expected).max()
    )


def test_sklearn_logistic_regression() -> None:
    X, y = _classification()
    _assert_classifier(LogisticRegression().fit(X, y), X)


def test_sklearn_pipeline_fitted_on_dataframe_multiclass() -> None:
    X, y = _classification(n_classes=3)
    df = pd.DataFrame(X, columns=[f"c{i}" for i in range(N_FEATURES)])
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=500)).fit(df, y)
    _assert_classifier(model, df, sample=df[:5])


def test_sklearn_gbdt_classifier() -> None:
    X, y = _classification()
    _assert_classifier(GradientBoostingClassifier(n_estimators=10, random_state=0).fit(X, y), X)


def test_sklearn_regressors() -> None:
    X, y = _regression()
    _assert_regressor(LinearRegression().fit(X, y), X)
    _assert_regressor(RandomForestRegressor(n_estimators=10, max_depth=4, random_state=0).fit(X, y), X)


def test_xgboost_fitted_on_dataframe_with_int_columns() -> None:
    xgboost = pytest.importorskip("xgboost")
    X, y = _classification()
    df = pd.DataFrame(X, columns=[f"c{i}" for i in range(N_FEATURES)])
    df["c5"] = (df["c5"] * 3).round().astype(np.int64)  # named, typed columns must not break onnxmltools
    model = xgboost.XGBClassifier(n_estimators=10, max_depth=3).fit(df, y)
    _assert_classifier(model, df.to_numpy(np.float32))
    assert model.get_booster().feature_names == list(df.columns)  # the caller's model is untouched


def test_xgboost_multiclass_and_regressor() -> None:
    xgboost = pytest.importorskip("xgboost")
    X, y = _classification(n_classes=3)
    _assert_classifier(xgboost.XGBClassifier(n_estimators=10, max_depth=3).fit(X, y), X)
    Xr, yr = _regression()
    _assert_regressor(xgboost.XGBRegressor(n_estimators=10, max_depth=3).fit(Xr, yr), Xr)


def test_xgboost_inside_sklearn_pipeline() -> None:
    xgboost = pytest.importorskip("xgboost")
    X, y = _classification()
    model = make_pipeline(StandardScaler(), xgboost.XGBClassifier(n_estimators=10, max_depth=3)).fit(X, y)
    _assert_classifier(model, X)


def test_lightgbm_classifier_and_regressor() -> None:
    lightgbm = pytest.importorskip("lightgbm")
    for n_classes in (2, 3):
        X, y = _classification(n_classes)
        _assert_classifier(lightgbm.LGBMClassifier(n_estimators=10, verbose=-1).fit(X, y), X)
    Xr, yr = _regression()
    _assert_regressor(lightgbm.LGBMRegressor(n_estimators=10, verbose=-1).fit(Xr, yr), Xr)


def test_onnx_bytes_proto_and_path_pass_through(tmp_path: Path) -> None:
    X, y = _classification()
    data = to_onnx(LogisticRegression().fit(X, y))
    assert to_onnx(data) == data
    assert to_onnx(onnx.load_from_string(data)) == data
    path = tmp_path / "model.onnx"
    path.write_bytes(data)
    assert to_onnx(path) == data
    assert to_onnx(str(path)) == data


def test_describe_onnx_reports_v2_metadata() -> None:
    X, y = _classification(n_classes=3)
    inputs, outputs = describe_onnx(to_onnx(LogisticRegression(max_iter=500).fit(X, y)))
    assert inputs == [{"name": "input", "datatype": "FP32", "shape": [-1, N_FEATURES]}]
    assert outputs == [
        {"name": "label", "datatype": "INT64", "shape": [-1]},
        {"name": "probabilities", "datatype": "FP32", "shape": [-1, 3]},
    ]


def test_describe_onnx_rejects_zipmap_outputs() -> None:
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import FloatTensorType

    X, y = _classification()
    proto = convert_sklearn(
        LogisticRegression().fit(X, y), initial_types=[("input", FloatTensorType([None, N_FEATURES]))]
    )
    with pytest.raises(InvalidInput, match="zipmap"):
        describe_onnx(proto.SerializeToString())


def test_unfitted_model_is_rejected() -> None:
    with pytest.raises(InvalidInput, match="fit it first"):
        to_onnx(LogisticRegression(), n_features=N_FEATURES)


@pytest.mark.parametrize("thing", [{"weights": [1, 2]}, 42, None, object()])
def test_unsupported_object_is_rejected(thing: object) -> None:
    with pytest.raises(InvalidInput, match="supported are"):
        to_onnx(thing)


@pytest.mark.parametrize("garbage", [b"", b"not onnx at all", bytes(range(256))])
def test_garbage_bytes_are_rejected(garbage: bytes) -> None:
    with pytest.raises(InvalidInput, match="not a valid ONNX model"):
        to_onnx(garbage)
    with pytest.raises(InvalidInput, match="not a valid ONNX model"):
        describe_onnx(garbage)


def test_bad_paths_are_rejected(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match="no file"):
        to_onnx(tmp_path / "missing.onnx")
    pickle = tmp_path / "model.pkl"
    pickle.write_bytes(b"\x80\x04")
    with pytest.raises(InvalidInput, match="never unpickles"):
        to_onnx(pickle)


def test_feature_count_mismatch_is_rejected() -> None:
    X, y = _classification()
    model = LogisticRegression().fit(X, y)
    with pytest.raises(InvalidInput, match="fitted on 6 features"):
        to_onnx(model, n_features=4)
    with pytest.raises(InvalidInput, match="only one of them"):
        to_onnx(model, n_features=6, sample=X[:, :3])


def test_unconvertible_estimator_is_rejected() -> None:
    from sklearn.base import BaseEstimator

    class Custom(BaseEstimator):
        def fit(self, X: np.ndarray, y: np.ndarray) -> Custom:
            self.n_features_in_ = X.shape[1]
            return self

    X, y = _classification()
    with pytest.raises(InvalidInput, match="cannot convert the Custom"):
        to_onnx(Custom().fit(X, y))
