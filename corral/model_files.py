"""Client-side loading of trained-model files for upload (runs on the user's machine, never the server)."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def load_model_file(path: Path, *, trust_pickle: bool = False) -> Any:
    """An object `cluster.convert.to_onnx` accepts, read from a model file of a known format."""
    suffix = path.suffix.lower()
    if suffix == ".onnx":
        return path.read_bytes()
    if suffix in (".json", ".ubj"):
        import xgboost

        booster = xgboost.Booster()
        booster.load_model(str(path))
        kind = xgboost.XGBClassifier if "logistic" in str(booster.save_config()) else xgboost.XGBRegressor
        model = kind()
        model.load_model(str(path))
        return model
    if suffix == ".txt":
        import lightgbm

        return lightgbm.Booster(model_file=str(path))
    if suffix in (".pkl", ".pickle", ".joblib"):
        if not trust_pickle:
            raise ValueError(
                f"{path.name} is a pickle, which runs code when loaded: pass --trust-pickle if you made it, "
                "or export the model to ONNX yourself"
            )
        import joblib

        return joblib.load(path)  # the user's own file, on the user's own machine
    raise ValueError(
        f"unsupported model file {path.name!r}: use .onnx, an XGBoost .json/.ubj, a LightGBM .txt, "
        "or a scikit-learn .pkl/.joblib with --trust-pickle"
    )
