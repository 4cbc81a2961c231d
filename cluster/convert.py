"""Client-side conversion of trained models to ONNX bytes: the server only ever receives ONNX.

scikit-learn goes through skl2onnx; XGBoost and LightGBM go through onnxmltools' converters
registered with skl2onnx, so they also work as the last step of a scikit-learn Pipeline.
Classifiers get plain tensor outputs `label` [N] and `probabilities` [N, n_classes] (no ZipMap).
"""

from __future__ import annotations

import copy
import functools
import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import onnx
from onnx import TensorProto

from pipelines.errors import InvalidInput

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

INPUT_NAME = "input"
# A fixed opset keeps the output loadable by every onnxruntime Corral supports, whatever skl2onnx
# would pick as "latest" on the client.
DEFAULT_OPSET = 17
# onnxmltools' tree converters default to ai.onnx.ml 5, which skl2onnx refuses: pin what both accept.
ML_OPSET = 3

SUPPORTED = (
    "ONNX bytes, a path to a .onnx file, an onnx.ModelProto, a fitted scikit-learn estimator or Pipeline, "
    "XGBClassifier/XGBRegressor, LGBMClassifier/LGBMRegressor"
)
EXPORT_HINT = (
    "or export the model to ONNX yourself (torch.onnx, tf2onnx, skl2onnx, onnxmltools) "
    "and pass the .onnx file or its bytes"
)
_PICKLE_SUFFIXES = frozenset({".pkl", ".pickle", ".joblib"})

_V2_DATATYPES: dict[int, str] = {
    TensorProto.FLOAT: "FP32",
    TensorProto.DOUBLE: "FP64",
    TensorProto.FLOAT16: "FP16",
    TensorProto.BFLOAT16: "BF16",
    TensorProto.INT8: "INT8",
    TensorProto.INT16: "INT16",
    TensorProto.INT32: "INT32",
    TensorProto.INT64: "INT64",
    TensorProto.UINT8: "UINT8",
    TensorProto.UINT16: "UINT16",
    TensorProto.UINT32: "UINT32",
    TensorProto.UINT64: "UINT64",
    TensorProto.BOOL: "BOOL",
    TensorProto.STRING: "BYTES",
}


def to_onnx(
    model: object,
    *,
    n_features: int | None = None,
    sample: np.ndarray | pd.DataFrame | None = None,
    target_opset: int | None = None,
) -> bytes:
    """Return `model` as validated ONNX bytes with one float32 input `input` [None, n_features].

    n_features comes from `n_features`, else `sample.shape[1]`, else the estimator's `n_features_in_`.
    ONNX given as bytes, a path or a ModelProto is validated and returned unchanged.
    """
    if isinstance(model, bytes | bytearray | memoryview):
        data = bytes(model)
        load_checked(data)
        return data
    if isinstance(model, str | os.PathLike):
        return _from_path(Path(model))
    if isinstance(model, onnx.ModelProto):
        data = model.SerializeToString()
        load_checked(data)
        return data
    if not (hasattr(model, "fit") and hasattr(model, "get_params")):
        raise InvalidInput(
            f"cannot convert a {type(model).__name__} to ONNX: supported are {SUPPORTED}; {EXPORT_HINT}"
        )
    _check_fitted(model)
    features = _resolve_n_features(model, n_features, sample)
    return _convert_estimator(model, features, target_opset or DEFAULT_OPSET)


def describe_onnx(data: bytes) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Inputs and outputs of an ONNX model as V2 metadata: `{"name", "datatype", "shape"}` (-1 = dynamic)."""
    proto = load_checked(data)
    # Old IR versions list initializers among the inputs; they are weights, not things a caller feeds.
    weights = {init.name for init in proto.graph.initializer}
    inputs = [_describe_value(v, "input") for v in proto.graph.input if v.name not in weights]
    outputs = [_describe_value(v, "output") for v in proto.graph.output]
    return inputs, outputs


def load_checked(data: bytes) -> onnx.ModelProto:
    """Parse and check ONNX bytes; anything else is an InvalidInput saying how to get a real ONNX file."""
    try:
        proto = onnx.load_from_string(data)
        onnx.checker.check_model(proto)
    except Exception as exc:  # protobuf DecodeError, onnx ValidationError, ... all mean the same to the user
        raise InvalidInput(
            f"not a valid ONNX model: {exc}; export it with torch.onnx/skl2onnx or upload a .onnx file"
        ) from exc
    return proto


def _from_path(path: Path) -> bytes:
    if path.suffix.lower() in _PICKLE_SUFFIXES:
        raise InvalidInput(
            f"{path} looks like a pickle, and Corral never unpickles: load it yourself (joblib.load) "
            f"and pass the fitted estimator, {EXPORT_HINT}"
        )
    if not path.is_file():
        raise InvalidInput(f"no file at {path}: check the path to the .onnx file")
    data = path.read_bytes()
    load_checked(data)
    return data


def _check_fitted(model: object) -> None:
    from sklearn.exceptions import NotFittedError
    from sklearn.utils.validation import check_is_fitted

    try:
        check_is_fitted(model)
    except NotFittedError as exc:
        raise InvalidInput(
            f"the {type(model).__name__} is not fitted: fit it first (model.fit(X, y)), then convert it"
        ) from exc


def _resolve_n_features(model: object, n_features: int | None, sample: Any) -> int:
    if sample is not None:
        shape = getattr(sample, "shape", None)
        if shape is None or len(shape) != 2:
            raise InvalidInput(
                f"sample must be 2-D (rows x features), got shape {shape}: "
                "pass a few training rows, like X[:5]"
            )
        if n_features is not None and n_features != shape[1]:
            raise InvalidInput(
                f"n_features={n_features} but sample has {shape[1]} columns: pass only one of them"
            )
        n_features = int(shape[1])
    fitted = getattr(model, "n_features_in_", None)
    if n_features is None:
        if fitted is None:
            raise InvalidInput(
                f"cannot tell how many features the {type(model).__name__} takes: pass n_features=... "
                "or sample=X[:5]"
            )
        n_features = int(fitted)
    if fitted is not None and int(fitted) != n_features:
        raise InvalidInput(
            f"the {type(model).__name__} was fitted on {fitted} features, not {n_features}: "
            "fix n_features/sample or refit the model"
        )
    if n_features < 1:
        raise InvalidInput(f"n_features must be at least 1, got {n_features}")
    return n_features


def _convert_estimator(model: object, n_features: int, opset: int) -> bytes:
    libraries = {type(est).__module__.partition(".")[0] for est in _estimators(model)}
    # Importing xgboost/lightgbm is slow: only models that use them pay for it.
    if "xgboost" in libraries:
        _register_xgboost()
        model = _without_xgboost_feature_names(model)
    if "lightgbm" in libraries:
        _register_lightgbm()

    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import FloatTensorType
    from sklearn.base import is_classifier

    final = _final_estimator(model)
    options = {id(final): {"zipmap": False}} if is_classifier(final) else None
    try:
        proto = convert_sklearn(
            model,
            initial_types=[(INPUT_NAME, FloatTensorType([None, n_features]))],
            options=options,
            target_opset={"": opset, "ai.onnx.ml": ML_OPSET},
        )
    except Exception as exc:  # skl2onnx raises many unrelated types (RuntimeError, MissingShapeCalculator...)
        raise InvalidInput(
            f"cannot convert the {type(model).__name__} to ONNX: {exc}. "
            f"Supported are {SUPPORTED}; {EXPORT_HINT}"
        ) from exc
    data: bytes = proto.SerializeToString()
    load_checked(data)
    return data


def _estimators(model: object) -> Iterator[object]:
    """The model and every estimator nested in it (Pipeline steps, meta-estimator members)."""
    yield model
    get_params = getattr(model, "get_params", None)
    if callable(get_params):
        for value in get_params(deep=True).values():
            if value is not model and hasattr(value, "fit") and hasattr(value, "get_params"):
                yield value


def _final_estimator(model: object) -> object:
    while isinstance(getattr(model, "steps", None), list) and model.steps:  # type: ignore[attr-defined]
        model = model.steps[-1][1]  # type: ignore[attr-defined]
    return model


def _without_xgboost_feature_names(model: object) -> object:
    """A copy whose boosters forget column names: onnxmltools only reads features named f0, f1, ..."""
    model = copy.deepcopy(model)  # never touch the caller's model
    for est in _estimators(model):
        get_booster = getattr(est, "get_booster", None)
        if type(est).__module__.startswith("xgboost") and callable(get_booster):
            get_booster().feature_names = None
    return model


@functools.cache
def _register_xgboost() -> None:
    from onnxmltools.convert.xgboost.operator_converters.XGBoost import convert_xgboost
    from skl2onnx import update_registered_converter
    from skl2onnx.common.shape_calculator import (
        calculate_linear_classifier_output_shapes,
        calculate_linear_regressor_output_shapes,
    )
    from xgboost import XGBClassifier, XGBRegressor

    update_registered_converter(
        XGBClassifier,
        "XGBoostXGBClassifier",
        calculate_linear_classifier_output_shapes,
        convert_xgboost,
        options={"nocl": [True, False], "zipmap": [True, False, "columns"]},
    )
    update_registered_converter(
        XGBRegressor, "XGBoostXGBRegressor", calculate_linear_regressor_output_shapes, convert_xgboost
    )


@functools.cache
def _register_lightgbm() -> None:
    from lightgbm import LGBMClassifier, LGBMRegressor
    from onnxmltools.convert.lightgbm.operator_converters.LightGbm import convert_lightgbm
    from skl2onnx import update_registered_converter
    from skl2onnx.common.shape_calculator import (
        calculate_linear_classifier_output_shapes,
        calculate_linear_regressor_output_shapes,
    )

    update_registered_converter(
        LGBMClassifier,
        "LightGbmLGBMClassifier",
        calculate_linear_classifier_output_shapes,
        convert_lightgbm,
        options={"nocl": [True, False], "zipmap": [True, False, "columns"]},
    )
    update_registered_converter(
        LGBMRegressor,
        "LightGbmLGBMRegressor",
        calculate_linear_regressor_output_shapes,
        convert_lightgbm,
        options={"split": None},
    )


def _describe_value(value: onnx.ValueInfoProto, kind: str) -> dict[str, Any]:
    if not value.type.HasField("tensor_type"):
        raise InvalidInput(
            f"ONNX {kind} {value.name!r} is a {value.type.WhichOneof('value')} (a ZipMap, say), not a "
            "tensor, and Corral serves tensors only: re-export with zipmap disabled (skl2onnx "
            "options={id(model): {'zipmap': False}}) or convert with corral's to_onnx"
        )
    tensor = value.type.tensor_type
    datatype = _V2_DATATYPES.get(tensor.elem_type)
    if datatype is None:
        raise InvalidInput(
            f"ONNX {kind} {value.name!r} has element type {TensorProto.DataType.Name(tensor.elem_type)}, "
            "which the V2 protocol cannot carry: cast it inside the model to float32, int64 or bool"
        )
    # No shape at all means even the rank is unknown: report one dynamic dimension.
    shape = (
        [dim.dim_value if dim.HasField("dim_value") else -1 for dim in tensor.shape.dim]
        if tensor.HasField("shape")
        else [-1]
    )
    return {"name": value.name, "datatype": datatype, "shape": shape}
