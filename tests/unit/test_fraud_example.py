"""examples.fraud: plausible synthetic data, a learnable label, and a spec the pipeline model accepts."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
from sklearn.metrics import roc_auc_score

from cluster.convert import to_onnx
from examples.fraud import FEATURES, fraud_pipeline_spec, make_transactions, standardise, train_fraud_model
from pipelines.spec import PipelineSpec


def test_transactions_have_the_columns_and_a_plausible_fraud_rate() -> None:
    df = make_transactions(5000, seed=3)
    assert list(df.columns) == ["customer_id", *FEATURES, "is_fraud"]
    assert len(df) == 5000
    assert df["customer_id"].str.fullmatch(r"c\d{5}").all()
    assert df["customer_id"].nunique() < len(df)  # keys repeat, for key-split demos
    assert df["age"].between(18, 90).all() and df["hour"].between(0, 23).all()
    assert df["merchant_risk"].between(0, 1).all() and (df["amount"] > 0).all()
    assert set(df["is_fraud"].unique()) <= {0, 1}
    assert 0.02 <= df["is_fraud"].mean() <= 0.10


def test_same_seed_same_data_and_shift_moves_amount() -> None:
    assert make_transactions(200, seed=1).equals(make_transactions(200, seed=1))
    base, shifted = make_transactions(5000, seed=1), make_transactions(5000, seed=1, shift=0.5)
    assert shifted["amount"].median() > 1.4 * base["amount"].median()
    assert shifted["age"].equals(base["age"])  # only the amount drifts


def test_logreg_converted_to_onnx_beats_auc_08_on_held_out_data() -> None:
    train, test = make_transactions(5000, seed=0), make_transactions(2000, seed=1)
    model, mean, std = train_fraud_model(train, "logreg")
    session = ort.InferenceSession(
        to_onnx(model, n_features=len(FEATURES)), providers=["CPUExecutionProvider"]
    )
    _, probabilities = session.run(["label", "probabilities"], {"input": standardise(test, mean, std)})
    assert roc_auc_score(test["is_fraud"], probabilities[:, 1]) > 0.8
    np.testing.assert_allclose(np.mean(standardise(train, mean, std), axis=0), 0.0, atol=1e-5)


def test_gbdt_trains_and_unknown_kind_is_rejected() -> None:
    model, mean, std = train_fraud_model(make_transactions(1000), "gbdt")
    assert len(mean) == len(std) == len(FEATURES)
    assert model.predict_proba(standardise(make_transactions(10, seed=5), mean, std)).shape == (10, 2)  # type: ignore[attr-defined]
    with pytest.raises(ValueError, match="logreg"):
        train_fraud_model(make_transactions(100), "svm")


def test_pipeline_spec_is_a_valid_spec() -> None:
    spec = PipelineSpec.model_validate(fraud_pipeline_spec("fraud:1", [0.0] * 6, [1.0] * 6, threshold=0.3))
    pre, model, post = spec.variants["main"].steps
    assert (pre.python, model.model, post.python) == (
        "pipelines.builtin:StandardScale",
        "fraud:1",
        "pipelines.builtin:Threshold",
    )
    assert pre.config["columns"] == FEATURES and model.columns == FEATURES
    assert model.batching is not None and model.batching.max_batch_size == 64
    assert post.config == {"column": "probabilities", "index": 1, "threshold": 0.3, "output": "is_fraud"}
    assert pre.resources.num_cpus == post.resources.num_cpus == 0.25 and model.resources.num_cpus == 0.5
    with pytest.raises(ValueError, match="one value per feature"):
        fraud_pipeline_spec("fraud:1", [0.0], [1.0])
