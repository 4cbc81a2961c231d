from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pyarrow as pa
import pytest
from sklearn.linear_model import LogisticRegression

from cluster.convert import to_onnx
from pipelines.errors import InvalidInput
from pipelines.onnx_step import OnnxModelStep, choose_providers


@pytest.fixture(scope="module")
def model() -> tuple[bytes, LogisticRegression]:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 3)).astype(np.float32)
    y = (x[:, 2] > 0).astype(int)
    est = LogisticRegression().fit(x, y)
    return to_onnx(est, n_features=3), est


def test_named_columns_feed_a_2d_input_and_outputs_become_columns(model) -> None:
    data, est = model
    step = OnnxModelStep(data, columns=["a", "b", "c"])
    table = pa.table({"c": [0.5, -1.0], "a": [1.0, 2.0], "b": [0, 1], "id": ["x", "y"]})
    out = step(table)
    assert out.column_names == ["label", "probabilities"]
    assert pa.types.is_fixed_size_list(out.schema.field("probabilities").type)
    expected = est.predict_proba(np.array([[1.0, 0, 0.5], [2.0, 1, -1.0]], dtype=np.float32))
    got = np.array(out.column("probabilities").to_pylist())
    np.testing.assert_allclose(got, expected, rtol=1e-4)


def test_tensor_column_passes_straight_through(model) -> None:
    data, _ = model
    step = OnnxModelStep(data)
    x = pa.FixedSizeListArray.from_arrays(pa.array(np.arange(6, dtype=np.float32)), 3)
    assert step(pa.table({"input": x})).num_rows == 2


@pytest.mark.parametrize(
    ("table", "fragment"),
    [
        (pa.table({"a": [1.0], "b": [2.0]}), "needs columns ['c']"),
        (pa.table({"a": [1.0], "b": [2.0], "c": ["x"]}), "needs numbers"),
        (pa.table({"a": [1.0], "b": [2.0], "c": [float("nan")]}), "NaN or null"),
        (
            pa.table(
                {"a": [1.0], "b": [2.0], "c": [None]},
                schema=pa.schema({"a": pa.float64(), "b": pa.float64(), "c": pa.float64()}),
            ),
            "NaN or null",
        ),
    ],
)
def test_bad_inputs_are_invalid_input(model, table: pa.Table, fragment: str) -> None:
    data, _ = model
    with pytest.raises(InvalidInput, match=fragment.replace("[", r"\[").replace("]", r"\]")):
        OnnxModelStep(data, columns=["a", "b", "c"])(table)


def test_wrong_width_tensor_is_rejected(model) -> None:
    data, _ = model
    x = pa.FixedSizeListArray.from_arrays(pa.array(np.arange(4, dtype=np.float32)), 2)
    with pytest.raises(InvalidInput, match="takes 3"):
        OnnxModelStep(data)(pa.table({"input": x}))


def test_allow_nan_lets_nan_through(model) -> None:
    data, _ = model
    out = OnnxModelStep(data, columns=["a", "b", "c"], allow_nan=True)(
        pa.table({"a": [1.0], "b": [2.0], "c": [float("nan")]})
    )
    assert out.num_rows == 1


def test_gpu_request_falls_back_to_cpu_with_a_warning(caplog) -> None:
    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("a real GPU runtime is present")
    assert choose_providers(1) == ["CPUExecutionProvider"]
    assert "running on CPU" in caplog.text
