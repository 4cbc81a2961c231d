"""Built-in steps on real Arrow tables: results, bad configs, missing columns."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pyarrow as pa
import pytest

from pipelines.builtin import (
    Argmax,
    Cast,
    FillNA,
    LabelMap,
    OneHot,
    Rename,
    Select,
    StandardScale,
    Threshold,
)
from pipelines.errors import InvalidInput
from pipelines.step import build_step


def fixed(rows: list[list[float]], type_: pa.DataType = pa.float32()) -> pa.Array:
    return pa.array(rows, type=pa.list_(type_, len(rows[0])))


@pytest.fixture
def table() -> pa.Table:
    return pa.table(
        {
            "a": pa.array([1.0, None, math.nan], pa.float64()),
            "b": pa.array([1, 2, 3], pa.int64()),
            "c": ["x", "y", "z"],
            "p": fixed([[0.1, 0.9], [0.8, 0.2], [0.5, 0.5]]),
        }
    )


# ---------------------------------------------------------------- Select / Rename / Cast


def test_select_keeps_columns_in_order(table: pa.Table) -> None:
    out = Select({"columns": ["c", "a"]})(table)
    assert out.column_names == ["c", "a"]
    assert out.column("c").to_pylist() == ["x", "y", "z"]


def test_select_missing_column_names_it_and_the_present_ones(table: pa.Table) -> None:
    with pytest.raises(InvalidInput, match=r"\['nope'\].*\['a', 'b', 'c', 'p'\]"):
        Select({"columns": ["a", "nope"]})(table)


def test_rename(table: pa.Table) -> None:
    out = Rename({"mapping": {"a": "alpha", "c": "cat"}})(table)
    assert out.column_names == ["alpha", "b", "cat", "p"]


def test_rename_refuses_a_clash(table: pa.Table) -> None:
    with pytest.raises(InvalidInput, match="two columns named"):
        Rename({"mapping": {"a": "b"}})(table)


def test_rename_missing_column(table: pa.Table) -> None:
    with pytest.raises(InvalidInput, match="'zz'"):
        Rename({"mapping": {"zz": "y"}})(table)


def test_cast_plain_and_list_columns(table: pa.Table) -> None:
    out = Cast({"columns": {"b": "float32", "p": "float64", "c": "string"}})(table)
    assert out.schema.field("b").type == pa.float32()
    assert out.schema.field("p").type == pa.list_(pa.float64(), 2)
    assert out.column("b").to_pylist() == [1.0, 2.0, 3.0]


def test_cast_failure_is_invalid_input(table: pa.Table) -> None:
    with pytest.raises(InvalidInput, match=r"cannot cast column 'c' from string to float32"):
        Cast({"columns": {"c": "float32"}})(table)
    with pytest.raises(InvalidInput, match="cannot cast column 'x'"):
        Cast({"columns": {"x": "int64"}})(pa.table({"x": [1.5]}))  # safe: no silent truncation


def test_cast_keeps_field_metadata() -> None:
    t = pa.table({"x": fixed([[1.0, 2.0]])}).cast(
        pa.schema([pa.field("x", pa.list_(pa.float32(), 2), metadata={b"shape": b"[1,2]"})])
    )
    out = Cast({"columns": {"x": "float64"}})(t)
    assert out.schema.field("x").metadata == {b"shape": b"[1,2]"}


# ---------------------------------------------------------------- FillNA


def test_fillna_replaces_nulls_and_nan(table: pa.Table) -> None:
    out = FillNA({"value": 0.0, "columns": ["a"]})(table)
    assert out.column("a").to_pylist() == [1.0, 0.0, 0.0]
    assert out.column("a").null_count == 0


def test_fillna_per_column_values() -> None:
    t = pa.table({"n": pa.array([1, None], pa.int64()), "s": ["a", None], "f": [math.nan, 2.0]})
    out = FillNA({"values": {"n": -1, "s": "missing", "f": 9.5}})(t)
    assert out.to_pydict() == {"n": [1, -1], "s": ["a", "missing"], "f": [9.5, 2.0]}
    assert out.schema == t.schema


def test_fillna_inside_fixed_size_lists() -> None:
    t = pa.table({"x": pa.array([[1.0, math.nan], None], pa.list_(pa.float32(), 2))})
    out = FillNA({"value": 0, "columns": ["x"]})(t)
    assert out.column("x").to_pylist() == [[1.0, 0.0], [0.0, 0.0]]


def test_fillna_without_holes_returns_the_table_unchanged() -> None:
    t = pa.table({"f": [1.0, 2.0], "n": [1, 2]})
    assert FillNA({"value": 0, "columns": ["f", "n"]})(t) is t


def test_fillna_value_of_wrong_type(table: pa.Table) -> None:
    t = pa.table({"n": pa.array([1, None], pa.int64())})
    with pytest.raises(InvalidInput, match=r"cannot fill column 'n' \(int64\) with 'x'"):
        FillNA({"value": "x", "columns": ["n"]})(t)


def test_fillna_missing_column(table: pa.Table) -> None:
    with pytest.raises(InvalidInput, match="column 'q' is missing"):
        FillNA({"values": {"q": 1}})(table)


# ---------------------------------------------------------------- StandardScale


def test_standard_scale_plain_columns_to_float32(table: pa.Table) -> None:
    out = StandardScale({"columns": ["a", "b"], "mean": [1, 2], "std": [2, 0.5]})(table)
    assert out.schema.field("a").type == pa.float32()
    assert out.schema.field("b").type == pa.float32()
    assert out.column("b").to_pylist() == [-2.0, 0.0, 2.0]
    a = out.column("a").to_pylist()
    assert a[0] == 0.0 and a[1] is None and math.isnan(a[2])  # null stays null, NaN stays NaN
    assert out.column_names == table.column_names
    assert out.column("c").to_pylist() == ["x", "y", "z"]


def test_standard_scale_list_column_per_feature() -> None:
    t = pa.table({"x": fixed([[1.0, 10.0], [3.0, 30.0]], pa.float64())})
    out = StandardScale({"columns": ["x"], "mean": [[2.0, 20.0]], "std": [[1.0, 10.0]]})(t)
    assert out.schema.field("x").type == pa.list_(pa.float32(), 2)
    assert out.column("x").to_pylist() == [[-1.0, -1.0], [1.0, 1.0]]


def test_standard_scale_list_width_mismatch() -> None:
    t = pa.table({"x": fixed([[1.0, 10.0, 3.0]])})
    with pytest.raises(InvalidInput, match="3 values per row"):
        StandardScale({"columns": ["x"], "mean": [[2.0, 20.0]], "std": [1]})(t)


def test_standard_scale_rejects_strings(table: pa.Table) -> None:
    with pytest.raises(InvalidInput, match="column 'c' has type string"):
        StandardScale({"columns": ["c"], "mean": [0], "std": [1]})(table)


@pytest.mark.parametrize(
    ("config", "match"),
    [
        ({"columns": ["a", "b"], "mean": [0], "std": [1, 1]}, "2 columns need 2 means"),
        ({"columns": ["a"], "mean": [0], "std": [0]}, "std must be finite and > 0"),
        ({"columns": ["a"], "mean": [0], "std": [-1]}, "std must be finite and > 0"),
        ({"columns": ["a"], "mean": [0]}, "std: Field required"),
        ({"columns": ["a"], "mean": [0], "std": [1], "scale": 2}, "scale: Extra inputs"),
    ],
)
def test_standard_scale_bad_config(config: dict[str, Any], match: str) -> None:
    with pytest.raises(InvalidInput, match=match):
        StandardScale(config)


# ---------------------------------------------------------------- OneHot


def test_one_hot_replaces_the_column_in_place(table: pa.Table) -> None:
    out = OneHot({"column": "c", "categories": ["x", "z", "q"]})(table)
    assert out.column_names == ["a", "b", "c_x", "c_z", "c_q", "p"]
    assert out.schema.field("c_x").type == pa.float32()
    assert out.column("c_x").to_pylist() == [1.0, 0.0, 0.0]
    assert out.column("c_z").to_pylist() == [0.0, 0.0, 1.0]
    assert out.column("c_q").to_pylist() == [0.0, 0.0, 0.0]  # unknown "y" is all zeros


def test_one_hot_keep_original_and_prefix(table: pa.Table) -> None:
    out = OneHot({"column": "b", "categories": [1, 3], "prefix": "n", "drop_original": False})(table)
    assert out.column_names == ["a", "b", "n_1", "n_3", "c", "p"]
    assert out.column("n_3").to_pylist() == [0.0, 0.0, 1.0]


def test_one_hot_large_string_batch_matches_small_path() -> None:
    values = [str(i % 5) if i % 7 else None for i in range(1000)]
    out = OneHot({"column": "s", "categories": ["1", "4"]})(pa.table({"s": values}))
    assert out.column("s_1").to_pylist() == [1.0 if v == "1" else 0.0 for v in values]


def test_one_hot_type_mismatch(table: pa.Table) -> None:
    with pytest.raises(InvalidInput, match="column 'b' has type int64 but categories are string"):
        OneHot({"column": "b", "categories": ["x"]})(table)


def test_one_hot_bad_configs() -> None:
    with pytest.raises(InvalidInput, match="appear more than once"):
        OneHot({"column": "c", "categories": ["x", "x"]})
    with pytest.raises(InvalidInput, match="mix types"):
        OneHot({"column": "c", "categories": ["x", 1]})
    with pytest.raises(InvalidInput, match="categories"):
        OneHot({"column": "c", "categories": []})


def test_one_hot_missing_column(table: pa.Table) -> None:
    with pytest.raises(InvalidInput, match="column 'color' is missing; the input has columns"):
        OneHot({"column": "color", "categories": ["x"]})(table)


# ---------------------------------------------------------------- Threshold


def test_threshold_plain_column() -> None:
    t = pa.table({"score": pa.array([0.2, 0.7, None, 0.5])})
    out = Threshold({"column": "score", "threshold": 0.5})(t)
    assert out.schema.field("label").type == pa.int64()
    assert out.column("label").to_pylist() == [0, 1, None, 0]  # strictly above


def test_threshold_custom_labels_and_output() -> None:
    t = pa.table({"n": [1, 5]})
    out = Threshold({"column": "n", "threshold": 2, "output": "big", "above": 7, "below": -7})(t)
    assert out.column("big").to_pylist() == [-7, 7]


def test_threshold_list_column_defaults_to_last_element(table: pa.Table) -> None:
    out = Threshold({"column": "p", "threshold": 0.5})(table)
    assert out.column("label").to_pylist() == [1, 0, 0]
    out = Threshold({"column": "p", "threshold": 0.5, "index": 0})(table)
    assert out.column("label").to_pylist() == [0, 1, 0]


def test_threshold_variable_list_column() -> None:
    t = pa.table({"l": pa.array([[0.1, 0.9], [0.7], None])})
    out = Threshold({"column": "l", "threshold": 0.5})(t)
    assert out.column("label").to_pylist() == [1, 1, None]
    with pytest.raises(InvalidInput, match="no element 1 in every row"):
        Threshold({"column": "l", "threshold": 0.5, "index": 1})(t)


def test_threshold_index_out_of_range(table: pa.Table) -> None:
    with pytest.raises(InvalidInput, match="index 2 is out of range"):
        Threshold({"column": "p", "threshold": 0.5, "index": 2})(table)


def test_threshold_errors(table: pa.Table) -> None:
    with pytest.raises(InvalidInput, match="column 'c' has type string"):
        Threshold({"column": "c", "threshold": 0.5})(table)
    with pytest.raises(InvalidInput, match="column 'zz' is missing"):
        Threshold({"column": "zz", "threshold": 0.5})(table)
    with pytest.raises(InvalidInput, match="threshold"):
        Threshold({"column": "a", "threshold": "high"})
    with pytest.raises(InvalidInput, match="threshold must be a finite number"):
        Threshold({"column": "a", "threshold": math.inf})


# ---------------------------------------------------------------- Argmax


def test_argmax_fixed_size_list(table: pa.Table) -> None:
    out = Argmax({"column": "p"})(table)
    assert out.schema.field("class").type == pa.int64()
    assert out.column("class").to_pylist() == [1, 0, 0]  # a tie gives the first


def test_argmax_variable_lists_and_nulls() -> None:
    t = pa.table({"l": pa.array([[1, 3, 2], [5], None, [2, 2]])})
    assert Argmax({"column": "l", "output": "k"})(t).column("k").to_pylist() == [1, 0, None, 0]
    equal = pa.table({"l": pa.array([[1.0, 3.0], [6.0, 5.0]])})
    assert Argmax({"column": "l"})(equal).column("class").to_pylist() == [1, 0]


def test_argmax_sliced_input() -> None:
    t = pa.table({"l": pa.array([[9, 0], [1, 3, 2], [0, 0, 7]])}).slice(1)
    assert Argmax({"column": "l"})(t).column("class").to_pylist() == [1, 2]


def test_argmax_errors(table: pa.Table) -> None:
    with pytest.raises(InvalidInput, match="needs a list column"):
        Argmax({"column": "a"})(table)
    with pytest.raises(InvalidInput, match="empty lists"):
        Argmax({"column": "l"})(pa.table({"l": pa.array([[1], []])}))
    with pytest.raises(InvalidInput, match="column 'q' is missing"):
        Argmax({"column": "q"})(table)
    with pytest.raises(InvalidInput, match="column: Field required"):
        Argmax({})


# ---------------------------------------------------------------- LabelMap


def test_label_map_dict_with_string_keys_matches_int_ids() -> None:
    t = pa.table({"cls": pa.array([0, 1, 7], pa.int32())})
    out = LabelMap({"column": "cls", "labels": {"0": "legit", "1": "fraud"}})(t)
    assert out.column("cls").to_pylist() == ["legit", "fraud", None]
    assert out.schema.field("cls").type == pa.string()


def test_label_map_list_and_output_column() -> None:
    t = pa.table({"k": [2, 0, None]})
    out = LabelMap({"column": "k", "labels": ["a", "b", "c"], "output": "name"})(t)
    assert out.column("name").to_pylist() == ["c", "a", None]
    assert out.column("k").to_pylist() == [2, 0, None]


def test_label_map_float_and_string_ids() -> None:
    floats = pa.table({"k": [1.0, 1.5, math.nan]})
    assert LabelMap({"column": "k", "labels": ["a", "b"]})(floats).column("k").to_pylist() == ["b", None, None]
    texts = pa.table({"k": ["1", "x"]})
    assert LabelMap({"column": "k", "labels": ["a", "b"]})(texts).column("k").to_pylist() == ["b", None]


def test_label_map_large_batch_uses_the_same_mapping() -> None:
    ids = np.arange(1000) % 4
    out = LabelMap({"column": "k", "labels": {0: "a", 2: "c"}})(pa.table({"k": ids}))
    assert out.column("k").to_pylist() == [{0: "a", 2: "c"}.get(int(i)) for i in ids]
    texts = pa.table({"k": [str(i) for i in ids]})
    assert LabelMap({"column": "k", "labels": ["a", "b"]})(texts).column("k").to_pylist()[:3] == ["a", "b", None]


def test_label_map_errors(table: pa.Table) -> None:
    with pytest.raises(InvalidInput, match="column 'p' has type fixed_size_list"):
        LabelMap({"column": "p", "labels": ["a"]})(table)
    with pytest.raises(InvalidInput, match="column 'zz' is missing"):
        LabelMap({"column": "zz", "labels": ["a"]})(table)
    with pytest.raises(InvalidInput, match="labels"):
        LabelMap({"column": "b", "labels": "ab"})


# ---------------------------------------------------------------- common


@pytest.mark.parametrize(
    ("cls", "config", "match"),
    [
        (Select, {"columns": []}, "columns"),
        (Select, {"columns": ["a", "a"]}, "appear more than once"),
        (Select, {"cols": ["a"]}, "cols: Extra inputs are not permitted"),
        (Select, None, "valid dictionary"),
        (Rename, {"mapping": {"a": "x", "b": "x"}}, "new names"),
        (Cast, {"columns": {"a": "float128"}}, "unknown types"),
        (FillNA, {"value": 0}, "both 'value' and 'columns'"),
        (FillNA, {"values": {"a": 0}, "value": 1, "columns": ["a"]}, "not both"),
        (Threshold, {"column": "a"}, "threshold: Field required"),
        (LabelMap, {"column": "a", "labels": {}}, "labels"),
    ],
)
def test_bad_configs_say_what_is_expected(cls: type, config: Any, match: str) -> None:
    with pytest.raises(InvalidInput, match=match) as info:
        cls(config)
    assert "expected {" in info.value.message or "list each" in info.value.message


def test_built_by_import_path_like_a_pipeline_spec() -> None:
    step = build_step("pipelines.builtin:Select", {"columns": ["b"]})
    assert step(pa.table({"a": [1], "b": [2]})).column_names == ["b"]


def test_column_flow_hooks_for_spec_validation() -> None:
    assert Select.required_columns({"columns": ["a", "b"]}) == ["a", "b"]
    assert Select.output_columns({"columns": ["b"]}, None) == ["b"]
    assert Rename.output_columns({"mapping": {"a": "z"}}, ["a", "b"]) == ["z", "b"]
    assert OneHot.output_columns({"column": "c", "categories": [1, 2]}, ["a", "c", "d"]) == [
        "a",
        "c_1",
        "c_2",
        "d",
    ]
    assert Threshold.output_columns({"column": "p", "threshold": 0.5}, ["p"]) == ["p", "label"]
    assert Argmax.output_columns({"column": "p"}, None) is None
    assert LabelMap.output_columns({"column": "k", "labels": ["a"]}, ["k"]) == ["k"]
    assert FillNA.required_columns({"value": 0, "columns": ["x"]}) == ["x"]


def test_multi_chunk_columns() -> None:
    chunked = pa.chunked_array([[0.1, 0.9], [0.6]])
    t = pa.table({"s": chunked, "n": pa.chunked_array([[1, 2], [3]])})
    assert Threshold({"column": "s", "threshold": 0.5})(t).column("label").to_pylist() == [0, 1, 1]
    scaled = StandardScale({"columns": ["n"], "mean": [2], "std": [1]})(t)
    assert scaled.column("n").to_pylist() == [-1.0, 0.0, 1.0]


def test_sliced_and_chunked_fixed_size_lists() -> None:
    probs = fixed([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]])
    sliced = pa.table({"p": probs}).slice(1)
    assert Threshold({"column": "p", "threshold": 0.5})(sliced).column("label").to_pylist() == [1, 0]
    chunked = pa.table({"p": pa.chunked_array([probs.slice(0, 1), probs.slice(1)])})
    assert Argmax({"column": "p"})(chunked).column("class").to_pylist() == [0, 1, 0]
