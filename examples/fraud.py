"""The fraud demo: synthetic card transactions, a model trained on them, and its pipeline spec.

The model is trained on standardised features but the scaling is not baked into it: the pipeline's
`pre` step (StandardScale) does it, so a new model version only needs the new mean/std in the spec.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

FEATURES = ["amount", "age", "n_tx", "hour", "merchant_risk", "distance_km"]
LABEL = "is_fraud"
MODEL_KINDS = ("logreg", "gbdt")

# Transactions cluster in the day; the night hours (0-5) are rare and riskier.
_HOUR_WEIGHTS = np.array([1, 1, 1, 1, 1, 1, 2, 3, 5, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 5, 4, 3, 2, 1.5])
_LOG_AMOUNT_MEAN = 3.5  # median amount about 33
# Chosen so that about 5% of unshifted transactions are fraud.
_FRAUD_INTERCEPT = -7.1


def make_transactions(n: int, seed: int = 0, shift: float = 0.0) -> pd.DataFrame:
    """`n` synthetic transactions with FEATURES, `customer_id` and the label `is_fraud` (about 5%).

    `shift` moves log(amount) by that much (0.5 makes amounts about 1.65x larger) to simulate drift;
    fraud keeps depending on the amount the same way, so the fraud rate rises with it.
    """
    if n < 0:
        raise ValueError(f"n must be 0 or more, got {n}")
    rng = np.random.default_rng(seed)
    n_customers = max(1, n // 10)  # about ten transactions per customer, so keys repeat
    customer_id = np.char.add("c", np.char.zfill(rng.integers(0, n_customers, n).astype(str), 5))
    amount = np.round(rng.lognormal(_LOG_AMOUNT_MEAN + shift, 1.0, n), 2)
    age = rng.integers(18, 91, n)
    n_tx = rng.poisson(1.5, n)
    hour = rng.choice(24, n, p=_HOUR_WEIGHTS / _HOUR_WEIGHTS.sum())
    merchant_risk = rng.beta(2, 8, n)
    distance_km = np.round(rng.lognormal(2.0, 1.0, n), 1)

    logit = (
        _FRAUD_INTERCEPT
        + 1.2 * (np.log(amount) - _LOG_AMOUNT_MEAN)
        + 0.7 * n_tx  # bursts of transactions: a stolen card being drained
        + 8.0 * merchant_risk
        + 1.5 * (hour < 6)
        + 0.6 * (np.log1p(distance_km) - 2.1)  # far from home
    )
    is_fraud = (rng.random(n) < 1.0 / (1.0 + np.exp(-logit))).astype(np.int64)
    return pd.DataFrame(
        {
            "customer_id": customer_id.astype(object),
            "amount": amount,
            "age": age.astype(np.int64),
            "n_tx": n_tx.astype(np.int64),
            "hour": hour.astype(np.int64),
            "merchant_risk": merchant_risk,
            "distance_km": distance_km,
            LABEL: is_fraud,
        }
    )


def standardise(df: pd.DataFrame, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """FEATURES of `df` scaled like the pipeline's StandardScale step would, as float32."""
    X = df[FEATURES].to_numpy(np.float64)
    return ((X - np.asarray(mean)) / np.asarray(std)).astype(np.float32)


def train_fraud_model(df: pd.DataFrame, kind: str = "logreg") -> tuple[object, list[float], list[float]]:
    """Fit a classifier of `kind` ("logreg" or "gbdt") on standardised FEATURES.

    Returns the fitted model and the per-feature mean and std that the serving pipeline's
    StandardScale step must apply before the model.
    """
    from sklearn.ensemble import GradientBoostingClassifier
    from sklearn.linear_model import LogisticRegression

    model: Any
    if kind == "logreg":
        model = LogisticRegression(max_iter=1000)
    elif kind == "gbdt":
        model = GradientBoostingClassifier(n_estimators=30, random_state=0)
    else:
        raise ValueError(f"unknown model kind {kind!r}: use one of {list(MODEL_KINDS)}")
    X = df[FEATURES].to_numpy(np.float64)
    mean = X.mean(axis=0)
    std = X.std(axis=0)
    std[std == 0] = 1.0  # a constant column would divide by zero in serving
    model.fit(standardise(df, mean, std), df[LABEL].to_numpy())
    return model, [float(v) for v in mean], [float(v) for v in std]


def fraud_pipeline_spec(
    model_ref: str, mean: Sequence[float], std: Sequence[float], threshold: float = 0.5
) -> dict[str, Any]:
    """The demo's pipeline spec: scale FEATURES -> ONNX model `model_ref` -> threshold P(fraud)."""
    if len(mean) != len(FEATURES) or len(std) != len(FEATURES):
        raise ValueError(
            f"mean and std need one value per feature {FEATURES}, got {len(mean)} and {len(std)}: "
            "pass the lists train_fraud_model returned"
        )
    cheap = {"num_cpus": 0.25}
    return {
        "steps": [
            {
                "name": "pre",
                "python": "pipelines.builtin:StandardScale",
                "config": {"columns": list(FEATURES), "mean": list(mean), "std": list(std)},
                "resources": dict(cheap),
            },
            {
                "name": "model",
                "model": model_ref,
                "columns": list(FEATURES),
                "batching": {"max_batch_size": 64, "wait_ms": 1},
                "resources": {"num_cpus": 0.5},
            },
            {
                "name": "post",
                "python": "pipelines.builtin:Threshold",
                "config": {"column": "probabilities", "index": 1, "threshold": threshold, "output": LABEL},
                "resources": dict(cheap),
            },
        ]
    }
