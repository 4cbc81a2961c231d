"""The explain engine end to end, without Ray: request -> features -> alibi -> `Explanation`.

The pipeline is an in-process model whose every output depends on `f3` alone, so each method has a
known right answer: f3 is the only important feature, the others have no effect at all.
"""

from __future__ import annotations

import math
import re
import time
from typing import Any

import numpy as np
import pyarrow as pa
import pytest

from explain.engine import ExplainerCache, Fitted, explain
from explain.explanation import METHODS, Explanation
from explain.features import logged_feature_columns, sample_rows
from explain.predictor import Progress
from explain.request import MIN_REFERENCE_ROWS, parse_request
from pipelines.errors import BudgetExceeded, InvalidInput, NotReady

FEATURES = ["f0", "f1", "f2", "f3", "colour", "count"]
NUMERIC = ["f0", "f1", "f2", "f3", "count"]
COLOURS = ["blue", "green", "red"]  # sorted, as the engine orders categories
OUTPUTS = ["label", "score", "probabilities"]
N = 200


def score_of(f3: Any) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-4.0 * np.asarray(f3, dtype=np.float64)))


def label_of(row: dict[str, Any]) -> int:
    return int(row["f3"] > 0)


class Model:
    """The pipeline: `label` = f3 > 0, `score` = sigmoid(4 f3), `probabilities` = [1 - score, score].

    Counts its calls, can be slow, and checks it gets rows shaped like real requests (decoded types).
    """

    def __init__(self, delay_s: float = 0.0, fixed_size: bool = True) -> None:
        self.delay_s = delay_s
        self.fixed_size = fixed_size
        self.calls = 0

    def __call__(self, table: pa.Table) -> pa.Table:
        self.calls += 1
        if self.delay_s:
            time.sleep(self.delay_s)
        assert table.column_names == FEATURES
        assert table.schema.field("colour").type == pa.string()
        assert table.schema.field("count").type == pa.int64()
        assert set(table.column("colour").to_pylist()) <= {*COLOURS, "purple"}
        score = score_of(table.column("f3").to_numpy())
        pairs = pa.array(np.column_stack([1.0 - score, score]).ravel())
        probabilities = (
            pa.FixedSizeListArray.from_arrays(pairs, 2)
            if self.fixed_size
            else pa.ListArray.from_arrays(pa.array(np.arange(0, 2 * len(score) + 1, 2, dtype=np.int32)), pairs)
        )
        return pa.table(
            {"label": pa.array((score > 0.5).astype(np.int64)), "score": score, "probabilities": probabilities}
        )


def run(
    body: dict[str, Any],
    reference: pa.Table,
    model: Model | None = None,
    cache: ExplainerCache | None = None,
    scope: tuple[Any, ...] = (),
    budget_s: float = 60.0,
) -> Explanation:
    request = parse_request(body)
    return explain(request, reference, model or Model(), Progress(request.method, budget_s), cache, scope)


def invalid(body: dict[str, Any], reference: pa.Table, *expected: str) -> str:
    with pytest.raises(InvalidInput) as info:
        run(body, reference)
    message = str(info.value)
    for part in expected:
        assert part in message
    return message


def features_in(anchor: list[str]) -> set[str]:
    return {name for predicate in anchor for name in re.findall(r"[A-Za-z_]\w*", predicate) if name in FEATURES}


def assert_plain(value: Any, where: str = "") -> None:
    """Only JSON's own types all the way down: no numpy scalars (not even np.float64), no NaN."""
    if isinstance(value, dict):
        for key, item in value.items():
            assert type(key) is str, f"{where}: key {key!r}"
            assert_plain(item, f"{where}.{key}")
    elif isinstance(value, list):
        for i, item in enumerate(value):
            assert_plain(item, f"{where}[{i}]")
    else:
        assert value is None or type(value) in (str, int, float, bool), f"{where}: {type(value).__name__}"
        if type(value) is float:
            assert math.isfinite(value), where


# -- shared data: one reference, and one explanation per method ------------------------------------


@pytest.fixture(scope="module")
def reference() -> pa.Table:
    rng = np.random.default_rng(7)
    f3 = rng.normal(size=N)
    f3 -= np.median(f3)  # anchors cut at the quartiles: the median is then exactly the model's boundary
    return pa.table(
        {
            "f0": rng.normal(size=N),
            "f1": rng.uniform(-2, 2, size=N),
            "f2": rng.normal(size=N),
            "f3": f3,
            "colour": pa.array(rng.choice(COLOURS, N).tolist()),
            "count": pa.array(rng.integers(0, 10, N)),
        }
    )


def by_f3(reference: pa.Table, *ranks: int) -> list[dict[str, Any]]:
    """Reference rows by the rank of their f3 (0: the most negative)."""
    order = np.argsort(reference.column("f3").to_numpy())
    return reference.take(pa.array(order[list(ranks)])).to_pylist()


@pytest.fixture(scope="module")
def anchored(reference: pa.Table) -> tuple[list[dict[str, Any]], Explanation]:
    rows = by_f3(reference, 10, 60, 185)
    return rows, run({"method": "anchors", "instances": rows}, reference)


@pytest.fixture(scope="module")
def shap_local(reference: pa.Table) -> tuple[list[dict[str, Any]], Explanation]:
    rows = by_f3(reference, 20, 170)
    return rows, run({"method": "kernel_shap", "instances": rows}, reference)


@pytest.fixture(scope="module")
def shap_global(reference: pa.Table) -> Explanation:
    return run({"method": "kernel_shap", "params": {"sample_size": 6}}, reference)


@pytest.fixture(scope="module")
def permuted(reference: pa.Table) -> Explanation:
    rows = reference.slice(0, 80).to_pylist()
    return run({"method": "permutation", "instances": rows, "labels": [label_of(r) for r in rows]}, reference)


@pytest.fixture(scope="module")
def accumulated(reference: pa.Table) -> Explanation:
    return run({"method": "ale"}, reference)


@pytest.fixture(scope="module")
def dependence(reference: pa.Table) -> Explanation:
    return run({"method": "pd", "params": {"features": ["colour", "f3", "count"], "grid_resolution": 6}}, reference)


# -- anchors ---------------------------------------------------------------------------------------


def test_anchors_finds_a_precise_rule_on_f3_alone_for_each_instance(
    anchored: tuple[list[dict[str, Any]], Explanation],
) -> None:
    rows, result = anchored
    assert result.method == "anchors"
    assert result.meta["output"] == "label"  # anchors explains a class by default
    assert result.meta["instances"] == 3
    assert len(result.data["instances"]) == 3
    assert [label_of(r) for r in rows] == [0, 0, 1]
    for row, found in zip(rows, result.data["instances"], strict=True):
        assert found["anchor"], found
        assert all(predicate.startswith("f3") for predicate in found["anchor"]), found["anchor"]
        assert features_in(found["anchor"]) == {"f3"}
        assert found["precision"] >= 0.95
        assert 0 < found["coverage"] <= 1
        assert found["prediction"] == label_of(row)
    first = result.data["instances"][0]
    assert {k: result.data[k] for k in first} == first  # the top-level keys describe the first instance


# -- kernel_shap -----------------------------------------------------------------------------------


def test_kernel_shap_local_gives_all_credit_to_f3_and_adds_up_to_the_prediction(
    reference: pa.Table, shap_local: tuple[list[dict[str, Any]], Explanation]
) -> None:
    rows, result = shap_local
    assert result.meta["output"] == "score"  # the default output is the first float column
    assert result.meta["instances"] == result.meta["rows_explained"] == 2
    names = result.data["feature_names"]
    assert names == FEATURES
    assert result.importances()[0][0] == "f3"
    assert result.importances()[0][1] > 0.1

    shap = np.array(result.data["shap_values"])
    assert shap.shape == (2, len(FEATURES))
    assert np.abs(np.delete(shap, names.index("f3"), axis=1)).max() < 1e-6
    assert shap[0, names.index("f3")] < 0 < shap[1, names.index("f3")]  # low f3 pulls down, high f3 up

    predictions = np.array(result.data["predictions"])
    np.testing.assert_allclose(predictions, score_of([r["f3"] for r in rows]), atol=1e-9)
    expected = result.data["expected_value"]
    np.testing.assert_allclose(shap.sum(axis=1) + expected, predictions, atol=1e-6)
    background = sample_rows(reference, result.meta["params"]["reference_size"], result.meta["params"]["seed"])
    assert result.meta["reference_rows"] == background.num_rows == 50
    assert expected == pytest.approx(score_of(background.column("f3").to_numpy()).mean(), abs=1e-9)


def test_kernel_shap_global_ranks_f3_first_over_a_sample_of_the_reference(shap_global: Explanation) -> None:
    assert shap_global.meta["instances"] == 0
    assert shap_global.meta["rows_explained"] == shap_global.meta["params"]["sample_size"] == 6
    assert len(shap_global.data["shap_values"]) == 6
    ranking = shap_global.importances()
    assert ranking[0][0] == "f3"
    assert ranking[0][1] > 0.05
    assert all(abs(importance) < 1e-6 for _, importance in ranking[1:])


# -- permutation -----------------------------------------------------------------------------------


def test_permutation_with_class_labels_uses_accuracy_and_finds_only_f3(permuted: Explanation) -> None:
    assert permuted.meta["output"] == "label"
    assert permuted.data["metric"] == permuted.meta["metric"] == "accuracy"
    assert permuted.data["baseline"] == 1.0  # the labels are the model's own
    ranking = permuted.importances()
    assert ranking[0][0] == "f3"
    assert ranking[0][1] > 0
    assert [importance for _, importance in ranking[1:]] == [0.0] * (len(FEATURES) - 1)
    assert all(item["std"] >= 0 for item in permuted.data["importances"])


def test_permutation_with_float_labels_uses_mean_squared_error(reference: pa.Table) -> None:
    rows = reference.slice(0, 60).to_pylist()
    labels = score_of([r["f3"] for r in rows]).tolist()
    result = run({"method": "permutation", "instances": rows, "labels": labels, "params": {"n_repeats": 2}}, reference)
    assert result.meta["output"] == "score"
    assert result.data["metric"] == "mean_squared_error"
    assert result.data["baseline"] == pytest.approx(0.0, abs=1e-12)
    ranking = result.importances()
    assert ranking[0][0] == "f3"
    assert ranking[0][1] > 0  # shuffling f3 raises the loss
    assert [importance for _, importance in ranking[1:]] == [0.0] * (len(FEATURES) - 1)


def test_permutation_without_instances_uses_every_reference_row(reference: pa.Table) -> None:
    labels = [label_of(r) for r in reference.to_pylist()]
    body = {"method": "permutation", "labels": labels, "params": {"n_repeats": 1, "reference_size": 10}}
    result = run(body, reference)
    assert result.meta["rows_explained"] == N
    assert result.importances()[0][0] == "f3"
    assert [item["std"] for item in result.data["importances"]] == [0.0] * len(FEATURES)  # one repeat: no spread


def test_permutation_needs_one_label_per_row(reference: pa.Table) -> None:
    rows = reference.slice(0, 20).to_pylist()
    invalid({"method": "permutation", "instances": rows, "labels": [0, 1] * 5}, reference, "10 labels for 20 rows")
    invalid({"method": "permutation", "labels": [0, 1]}, reference, f"2 labels for {N} complete reference rows")



def test_permutation_labels_must_be_of_the_outputs_kind(reference: pa.Table) -> None:
    """String labels against an integer label output would score nonsense: refused, not guessed."""
    rows = reference.slice(0, 20).to_pylist()
    labels = ["yes" if label_of(r) else "no" for r in rows]
    invalid({"method": "permutation", "instances": rows, "labels": labels}, reference, "holds numbers", "same kind")

# -- ale and pd ------------------------------------------------------------------------------------


def test_ale_of_f3_rises_and_of_the_other_features_is_flat(accumulated: Explanation) -> None:
    data = accumulated.data
    assert data["feature_names"] == FEATURES
    effects = dict(zip(data["feature_names"], data["effects"], strict=True))
    values = dict(zip(data["feature_names"], data["values"], strict=True))
    f3 = np.array(effects["f3"])
    assert len(f3) == len(values["f3"]) > 5
    assert np.all(np.diff(f3) >= -1e-12)
    assert f3.max() - f3.min() > 0.5
    for name in ("f0", "f1", "f2", "count"):
        assert effects[name], name
        assert len(effects[name]) == len(values[name])
        assert np.abs(effects[name]).max() < 1e-9, name
    assert values["colour"] == effects["colour"] == []
    assert "colour" in accumulated.meta["skipped"]


def test_pd_grids_categories_by_name_and_shows_f3_rising(dependence: Explanation) -> None:
    data = dependence.data
    assert data["feature_names"] == ["colour", "f3", "count"]
    colour, f3, count = (dict(values=v, effects=e) for v, e in zip(data["values"], data["effects"], strict=True))
    assert colour["values"] == COLOURS
    assert len(colour["effects"]) == 3
    assert max(colour["effects"]) - min(colour["effects"]) < 1e-9  # the model ignores colour
    assert len(f3["values"]) == len(f3["effects"]) == 6
    assert f3["values"] == sorted(f3["values"])
    assert f3["effects"][-1] - f3["effects"][0] > 0.5
    assert np.all(np.diff(f3["effects"]) >= -1e-12)
    assert max(count["effects"]) - min(count["effects"]) < 1e-9


def test_ale_and_pd_reject_an_unknown_feature(reference: pa.Table) -> None:
    for method in ("ale", "pd"):
        invalid({"method": method, "params": {"features": ["f9"]}}, reference, "unknown feature 'f9'", "f3")


# -- the output explained --------------------------------------------------------------------------


def shap_of_one(reference: pa.Table, model: Model | None = None, **params: Any) -> Explanation:
    row = by_f3(reference, 150)
    return run({"method": "kernel_shap", "instances": row, "params": {"nsamples": 100, **params}}, reference, model)


def test_a_named_scalar_output_is_explained(reference: pa.Table) -> None:
    result = shap_of_one(reference, output="label")
    assert result.meta["output"] == "label"
    assert result.data["predictions"] == [1.0]


@pytest.mark.parametrize("fixed_size", [True, False], ids=["fixed_size_list", "list"])
def test_a_vector_output_defaults_to_the_positive_class(reference: pa.Table, fixed_size: bool) -> None:
    model = Model(fixed_size=fixed_size)
    (row,) = by_f3(reference, 150)
    positive = shap_of_one(reference, model, output="probabilities")
    assert positive.meta["output"] == "probabilities[1]"
    assert positive.data["predictions"] == pytest.approx([score_of(row["f3"])], abs=1e-12)
    negative = shap_of_one(reference, model, output="probabilities", target=0)
    assert negative.meta["output"] == "probabilities[0]"
    assert negative.data["predictions"] == pytest.approx([1 - score_of(row["f3"])], abs=1e-12)


def test_unknown_output_or_target_is_invalid(reference: pa.Table) -> None:
    row = by_f3(reference, 150)
    body: dict[str, Any] = {"method": "kernel_shap", "instances": row}
    invalid({**body, "params": {"output": "nope"}}, reference, "'nope'", *OUTPUTS)
    invalid({**body, "params": {"output": "probabilities", "target": 5}}, reference, "target=5", "out of range")
    invalid({**body, "params": {"output": "score", "target": 0}}, reference, "vector")
    # anchors needs classes: a continuous score is not one
    invalid({"method": "anchors", "instances": row, "params": {"output": "score"}}, reference, "continuous score")


# -- the cache of fitted explainers ----------------------------------------------------------------


def test_a_repeated_request_reuses_the_fitted_explainer(reference: pa.Table) -> None:
    cache = ExplainerCache()
    model = Model()
    anchors = {"method": "anchors", "instances": by_f3(reference, 190)}
    first = run(anchors, reference, model, cache, scope=(1, "main"))
    second = run(anchors, reference, model, cache, scope=(1, "main"))
    assert first.meta["fitted_from_cache"] is False
    assert second.meta["fitted_from_cache"] is True
    assert 0 < second.meta["predict_calls"] < first.meta["predict_calls"]
    assert model.calls == first.meta["predict_calls"] + second.meta["predict_calls"]
    assert second.data["anchor"] == first.data["anchor"]
    assert cache.stats() == {"entries": 1, "hits": 1, "misses": 1}

    shap = {"method": "kernel_shap", "instances": by_f3(reference, 5), "params": {"nsamples": 50}}
    cold = run(shap, reference, model, cache, scope=(1, "main"))
    warm = run(shap, reference, model, cache, scope=(1, "main"))
    assert (cold.meta["fitted_from_cache"], warm.meta["fitted_from_cache"]) == (False, True)
    assert warm.meta["predict_calls"] < cold.meta["predict_calls"]
    np.testing.assert_allclose(warm.data["shap_values"], cold.data["shap_values"], atol=1e-9)

    other = run(shap, reference, model, cache, scope=(2, "main"))  # a new version fits anew
    assert other.meta["fitted_from_cache"] is False
    assert cache.stats()["entries"] == 3

    cache.keep_scope((2,))
    assert cache.stats()["entries"] == 1
    assert all(key[0] == 2 for key in cache.entries)
    assert run(shap, reference, model, cache, scope=(1, "main")).meta["fitted_from_cache"] is False


def test_the_cache_differs_by_output_and_ignores_uncached_methods(reference: pa.Table) -> None:
    cache = ExplainerCache()
    shap_of = {"method": "kernel_shap", "instances": by_f3(reference, 5), "params": {"nsamples": 20}}
    run(shap_of, reference, cache=cache)
    labelled = run({**shap_of, "params": {"nsamples": 20, "output": "label"}}, reference, cache=cache)
    assert labelled.meta["fitted_from_cache"] is False
    assert labelled.meta["output"] == "label"
    pd = run({"method": "pd", "params": {"features": ["f3"], "grid_resolution": 2}}, reference, cache=cache)
    assert pd.meta["fitted_from_cache"] is False
    assert cache.stats()["entries"] == 2


def test_the_cache_drops_the_least_recently_used_entry() -> None:
    cache = ExplainerCache(max_entries=2)
    fitted = Fitted(None, None, None)  # type: ignore[arg-type]
    cache.put((1, "a"), fitted)
    cache.put((1, "b"), fitted)
    assert cache.get((1, "a")) is fitted  # now "b" is the least recently used
    cache.put((1, "c"), fitted)
    assert list(cache.entries) == [(1, "a"), (1, "c")]
    assert cache.get((1, "b")) is None
    assert cache.stats() == {"entries": 2, "hits": 1, "misses": 1}


# -- bad requests ----------------------------------------------------------------------------------


ROW = {"f0": 0.1, "f1": 0.2, "f2": 0.3, "f3": 0.4, "colour": "red", "count": 3}


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        pytest.param([ROW], ["must be a JSON object"], id="not-a-dict"),
        pytest.param("anchors", ["must be a JSON object"], id="a-string"),
        pytest.param({"method": "lime"}, ["unknown method 'lime'", *METHODS], id="unknown-method"),
        pytest.param({"method": "anchors"}, ["anchors explains rows", "instances"], id="anchors-without-rows"),
        pytest.param({"method": "kernel_shap", "instances": []}, ["`instances` is empty"], id="empty-instances"),
        pytest.param({"method": "permutation", "instances": [ROW]}, ["needs the true `labels`"], id="no-labels"),
        pytest.param(
            {"method": "permutation", "instances": [ROW, ROW], "labels": [1, None]}, ["nulls"], id="null-label"
        ),
        pytest.param(
            {"method": "ale", "params": {"nsamples": 10}},
            ["invalid params for ale", "nsamples", "Allowed params", "min_bin_points", "features"],
            id="param-of-another-method",
        ),
        pytest.param(
            {"method": "anchors", "instances": [ROW], "params": {"threshold": 2}},
            ["threshold", "less than or equal to 1"],
            id="threshold-out-of-range",
        ),
        pytest.param(
            {"method": "pd", "params": {"reference_size": MIN_REFERENCE_ROWS - 1}}, ["reference_size"], id="tiny-size"
        ),
        pytest.param({"method": "ale", "reference": {"foo": 1}}, ['{"values": [records]}', "dataset"], id="ref-shape"),
        pytest.param({"method": "ale", "reference": {"values": []}}, ["reference"], id="ref-no-values"),
        pytest.param({"method": "ale", "bogus": 1}, ["bogus"], id="unknown-field"),
        pytest.param({"method": "ale", "instances": [ROW]}, ["ale is global", "reference"], id="ale-with-rows"),
        pytest.param(
            {"method": "anchors", "instances": [ROW], "params": {"percentiles": [75, 25]}},
            ["percentiles must be increasing"],
            id="percentiles-unordered",
        ),
    ],
)
def test_parse_request_says_what_is_wrong(body: Any, expected: list[str]) -> None:
    with pytest.raises(InvalidInput) as info:
        parse_request(body)
    for part in expected:
        assert part in str(info.value)


def test_parse_request_accepts_every_kind_of_reference() -> None:
    for reference in ({"values": [ROW]}, {"start": "2024-01-01T00:00:00Z"}, {"dataset": "loans:2"}):
        assert parse_request({"method": "ale", "reference": reference}).reference is not None
    params = parse_request({"method": "anchors", "instances": [ROW]}).method_params()
    assert params.reference_size == 1_000  # the method's default


@pytest.mark.parametrize(
    ("row", "expected"),
    [
        pytest.param(
            {k: v for k, v in ROW.items() if k != "colour"},
            ["missing ['colour']", "unexpected []"],
            id="missing-column",
        ),
        pytest.param({**ROW, "zzz": 1}, ["missing []", "unexpected ['zzz']"], id="extra-column"),
        pytest.param(
            {**ROW, "colour": "purple"}, ["'colour'", "['purple'] never seen in the reference"], id="new-category"
        ),
        pytest.param({**ROW, "f0": "abc"}, ["'f0'", "must be numeric"], id="text-for-a-number"),
    ],
)
def test_instances_must_fit_the_reference(reference: pa.Table, row: dict[str, Any], expected: list[str]) -> None:
    invalid({"method": "kernel_shap", "instances": [row]}, reference, "instances", *expected)


def test_instances_must_be_complete(reference: pa.Table) -> None:
    rows = [ROW, {**ROW, "f1": None}]
    invalid({"method": "kernel_shap", "instances": rows}, reference, "nulls in column 'f1'")


def test_the_reference_needs_enough_complete_rows(reference: pa.Table) -> None:
    small = reference.slice(0, MIN_REFERENCE_ROWS - 1)
    invalid({"method": "ale"}, small, f"at least {MIN_REFERENCE_ROWS}", f"has {MIN_REFERENCE_ROWS - 1} complete")
    holes = reference.slice(0, MIN_REFERENCE_ROWS + 1).to_pydict()
    holes["f0"][0] = holes["f2"][1] = None
    invalid({"method": "ale"}, pa.table(holes), f"at least {MIN_REFERENCE_ROWS}")


def test_the_reference_needs_inputs_that_can_vary(reference: pa.Table) -> None:
    nested = reference.append_column("tags", pa.array([[1, 2]] * N))
    invalid({"method": "ale"}, nested, "'tags'", "cannot vary")


# -- budget and reference handling -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "budget_s"),
    [
        pytest.param({"method": "pd", "params": {"grid_resolution": 5}}, 0.3, id="pd"),  # ~30 predict calls
        # the second call is alibi's trial call in AnchorTabular(), which wraps what the predictor raises
        pytest.param({"method": "anchors", "instances": [ROW]}, 0.1, id="anchors-while-fitting"),
    ],
)
def test_an_explanation_stops_at_its_time_budget(reference: pa.Table, body: dict[str, Any], budget_s: float) -> None:
    model = Model(delay_s=0.2)
    request = parse_request(body)
    started = time.monotonic()
    with pytest.raises(BudgetExceeded) as info:
        explain(request, reference, model, Progress(request.method, budget_s=budget_s))
    assert time.monotonic() - started < 1.5
    assert model.calls <= 3  # stopped at the next predict call, not at the end
    assert isinstance(info.value, NotReady)
    message = str(info.value)
    assert f"the {request.method} explanation ran past its time budget" in message
    assert "timeout_s" in message


def test_reference_rows_with_nulls_are_dropped_and_counted(reference: pa.Table) -> None:
    columns = reference.to_pydict()
    columns["f0"][0] = None
    columns["colour"][1] = None
    columns["count"][2] = columns["f3"][2] = None
    holes = pa.table(columns, schema=reference.schema)
    result = run({"method": "pd", "params": {"features": ["f3"], "grid_resolution": 2}}, holes)
    assert result.meta["reference_rows_dropped"] == 3
    assert result.meta["reference_rows"] == result.meta["rows_explained"] == N - 3


def test_the_reference_is_sampled_to_reference_size(reference: pa.Table) -> None:
    result = run(
        {"method": "pd", "params": {"features": ["f3"], "grid_resolution": 2, "reference_size": 25}}, reference
    )
    assert result.meta["reference_rows"] == result.meta["rows_explained"] == 25
    assert result.meta["reference_rows_dropped"] == 0


def test_categories_come_from_the_whole_reference_not_only_its_sample(reference: pa.Table) -> None:
    """A category seen in one reference row is known even when the sampled rows miss it."""
    numbered = reference.append_column("i", pa.array(range(N)))
    at = min(set(range(N)) - set(sample_rows(numbered, 10, 0).column("i").to_pylist()))
    columns = reference.to_pydict()
    columns["colour"][at] = "purple"
    rare = pa.table(columns, schema=reference.schema)
    assert "purple" not in sample_rows(rare, 10, 0).column("colour").to_pylist()

    (row,) = rare.slice(at, 1).to_pylist()
    local = run({"method": "kernel_shap", "instances": [row], "params": {"reference_size": 10}}, rare)
    assert local.meta["categorical"]["colour"] == ["blue", "green", "purple", "red"]
    assert local.data["predictions"] == pytest.approx([score_of(row["f3"])], abs=1e-12)

    labels = [label_of(r) for r in rare.to_pylist()]
    body = {"method": "permutation", "labels": labels, "params": {"reference_size": 10, "n_repeats": 1}}
    assert run(body, rare).importances()[0][0] == "f3"  # every reference row is explained, "purple" too


def test_logged_columns_only_some_requests_sent_are_left_out_of_the_reference() -> None:
    logged = pa.table(
        {
            "f0": [1.0, 2.0, 3.0, 4.0],
            "f1": [1.0, None, 3.0, 4.0],  # a feature with a gap: it stays, drop_incomplete handles the row
            "ticket": [None, None, None, "t-9"],  # one client also sent a ticket
        }
    )
    table, dropped = logged_feature_columns(logged, [{"f0": 0.0, "f1": 0.0}])
    assert (table.column_names, dropped) == (["f0", "f1"], ["ticket"])
    table, dropped = logged_feature_columns(logged, [{"f0": 0.0, "f1": 0.0, "ticket": "t-9"}])
    assert (table.column_names, dropped) == (["f0", "f1", "ticket"], [])
    table, dropped = logged_feature_columns(logged, [{"f1": 0.0}])  # f0 is in every row: still required
    assert (table.column_names, dropped) == (["f0", "f1"], ["ticket"])
    table, dropped = logged_feature_columns(logged, None)  # global: a column most rows lack is not a feature
    assert (table.column_names, dropped) == (["f0", "f1"], ["ticket"])
    assert logged_feature_columns(logged.slice(3), None) == (logged.slice(3), [])


# -- the result is plain JSON ----------------------------------------------------------------------


@pytest.mark.parametrize("name", ["anchored", "shap_local", "shap_global", "permuted", "accumulated", "dependence"])
def test_explanations_are_plain_json_that_round_trips(request: pytest.FixtureRequest, name: str) -> None:
    value = request.getfixturevalue(name)
    result: Explanation = value[1] if isinstance(value, tuple) else value
    assert_plain(result.meta, "meta")
    assert_plain(result.data, "data")
    assert Explanation.model_validate_json(result.model_dump_json()) == result
    for key in ("method", "params", "output", "feature_names", "reference_rows", "predict_calls", "elapsed_s"):
        assert key in result.meta, key
    assert "stage" not in result.meta
