"""Validation rules: parsing, precedence, three-valued logic, flag_rows, and helpful errors on bad input."""

from __future__ import annotations

import math
import pickle

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipelines.errors import InvalidInput
from pipelines.rules import (
    COUNT_COLUMN,
    MAX_DEPTH,
    MAX_SOURCE_CHARS,
    Flags,
    Rule,
    check_columns,
    flag_rows,
    parse_rule,
    parse_rules,
)


@pytest.fixture
def table() -> pa.Table:
    return pa.table(
        {
            "in.amount": pa.array([500, 2000, None, 5000, 10], pa.int64()),
            "in.age": pa.array([17, 18, 40, None, 65], pa.int32()),
            "in.country": pa.array(["XX", "US", None, "xx", "O'Brien"], pa.string()),
            "out.probability": pa.array([0.1, 0.95, 0.99, 0.5, math.nan], pa.float64()),
            "out.label": pa.array([0, 1, 1, 0, 1], pa.int64()),
        }
    )


def flagged(source: str, table: pa.Table) -> list[bool]:
    result = parse_rule("r", source).evaluate(table)
    assert isinstance(result, pa.BooleanArray)
    assert len(result) == table.num_rows
    assert result.null_count == 0
    return result.to_pylist()


def error_of(source: str, name: str = "high_risk") -> str:
    with pytest.raises(InvalidInput) as info:
        parse_rule(name, source)
    return info.value.message


# --------------------------------------------------------------------------------------------------------------------
# evaluation


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("in.amount > 1000", [False, True, False, True, False]),
        ("in.amount >= 2000", [False, True, False, True, False]),
        ("in.amount < 1000", [True, False, False, False, True]),
        ("in.amount <= 500", [True, False, False, False, True]),
        ("in.amount == 2000", [False, True, False, False, False]),
        ("in.amount = 2000", [False, True, False, False, False]),
        ("in.amount != 2000", [True, False, False, True, True]),
        ("in.amount <> 2000", [True, False, False, True, True]),
        ("out.probability > 0.9", [False, True, True, False, False]),  # NaN > 0.9 is false
        ("in.country == 'XX'", [True, False, False, False, False]),  # case-sensitive, null not flagged
        ('in.country = "US"', [False, True, False, False, False]),
        ("in.country == 'O\\'Brien'", [False, False, False, False, True]),
        ('in.country == "O\'Brien"', [False, False, False, False, True]),
        ("in.country != 'XX'", [False, True, False, True, True]),
        ("in.country > 'V'", [True, False, False, True, False]),
        ("1000 < in.amount", [False, True, False, True, False]),
    ],
)
def test_comparisons(table: pa.Table, source: str, expected: list[bool]) -> None:
    assert flagged(source, table) == expected


def test_equals_spellings_are_the_same(table: pa.Table) -> None:
    assert flagged("in.age = 18", table) == flagged("in.age == 18", table) == [False, True, False, False, False]
    assert flagged("in.age != 18", table) == flagged("in.age <> 18", table) == [True, False, True, False, True]


def test_and_binds_tighter_than_or() -> None:
    t = pa.table({"in.a": [1, 1, 0, 0], "in.b": [0, 1, 1, 0], "in.c": [0, 0, 1, 1]})
    # a or (b and c): row 0 is flagged by a alone; (a or b) and c would not flag it.
    assert flagged("in.a == 1 or in.b == 1 and in.c == 1", t) == [True, True, True, False]
    assert flagged("(in.a == 1 or in.b == 1) and in.c == 1", t) == [False, False, True, False]
    assert flagged("in.a == 1 || in.b == 1 && in.c == 1", t) == [True, True, True, False]
    assert flagged("in.b == 1 and in.c == 1 or in.a == 1", t) == [True, True, True, False]


def test_not_binds_looser_than_comparison_and_tighter_than_and(table: pa.Table) -> None:
    assert flagged("not in.age >= 18", table) == [True, False, False, False, False]
    assert flagged("not (in.age >= 18)", table) == [True, False, False, False, False]
    assert flagged("!(in.age >= 18)", table) == [True, False, False, False, False]
    # (not a) and b, not not (a and b)
    assert flagged("not in.age >= 18 and out.label == 1", table) == [False] * 5
    assert flagged("not not in.age >= 18", table) == [False, True, True, False, True]
    assert flagged("NOT in.age < 18 AND out.label == 1", table) == [False, True, True, False, True]


def test_nulls_are_never_flagged_but_follow_kleene_logic(table: pa.Table) -> None:
    # Row 2 has amount null: the comparison is null, and so is its negation.
    assert flagged("in.amount > 1000", table)[2] is False
    assert flagged("not (in.amount > 1000)", table)[2] is False
    assert flagged("in.amount <= 1000", table)[2] is False
    # null or true is true; null and true is null.
    assert flagged("in.amount > 1000 or out.probability > 0.9", table)[2] is True
    assert flagged("in.amount > 1000 and out.probability > 0.9", table)[2] is False
    # null and false is false, so its negation is flagged.
    assert flagged("not (in.amount > 1000 and out.probability < 0.5)", table)[2] is True


def test_is_null(table: pa.Table) -> None:
    assert flagged("in.amount is null", table) == [False, False, True, False, False]
    assert flagged("in.amount IS NOT NULL", table) == [True, True, False, True, True]
    assert flagged("in.country is null or in.age is null", table) == [False, False, True, True, False]
    # NaN is a value, not a missing one.
    assert flagged("out.probability is null", table) == [False] * 5
    assert flagged("is_nan(out.probability)", table) == [False, False, False, False, True]


def test_arithmetic(table: pa.Table) -> None:
    assert flagged("in.amount * 2 + 1 > 4001", table) == [False, False, False, True, False]
    assert flagged("in.amount - 1000 * 2 >= 0", table) == [False, True, False, True, False]  # * before -
    assert flagged("in.amount - 1000 * 2 >= 2000", table) == [False, False, False, True, False]
    assert flagged("(in.amount - 1000) * 2 >= 2000", table) == [False, True, False, True, False]
    assert flagged("1 + 2 * in.age == 37", table) == [False, True, False, False, False]
    assert flagged("(1 + 2) * in.age == 54", table) == [False, True, False, False, False]
    assert flagged("in.amount - 100 - 100 == 300", table) == [True, False, False, False, False]  # left-associative
    assert flagged("-in.amount < -1000", table) == [False, True, False, True, False]
    assert flagged("in.amount > -(-1000)", table) == [False, True, False, True, False]
    assert flagged("in.amount > - - 1000", table) == [False, True, False, True, False]


def test_division_is_true_division() -> None:
    t = pa.table({"in.a": pa.array([7, 8, 0], pa.int64()), "in.b": pa.array([2, 0, 0], pa.int64())})
    assert flagged("in.a / in.b == 3.5", t) == [True, False, False]
    assert flagged("in.a / 2 == 3.5", t) == [True, False, False]
    # dividing by zero gives inf or NaN instead of failing the whole rule
    assert flagged("in.a / in.b > 1e300", t) == [False, True, False]
    assert flagged("is_nan(in.a / in.b)", t) == [False, False, True]


def test_numbers() -> None:
    t = pa.table({"out.x": [0.0005, 0.002, 1.5, 100.0]})
    assert flagged("out.x < 1e-3", t) == [True, False, False, False]
    assert flagged("out.x < 1E-3", t) == [True, False, False, False]
    assert flagged("out.x == .002", t) == [False, True, False, False]
    assert flagged("out.x == 1.5", t) == [False, False, True, False]
    assert flagged("out.x >= 1e2", t) == [False, False, False, True]
    assert flagged("out.x == 100", t) == [False, False, False, True]


def test_functions(table: pa.Table) -> None:
    assert flagged("abs(out.probability - 0.5) < 0.01", table) == [False, False, False, True, False]
    assert flagged("ABS(in.amount - 1000) > 900", table) == [False, True, False, True, True]
    assert flagged("min(in.amount, in.age * 100) > 1000", table) == [False, True, False, False, False]
    assert flagged("max(in.amount, in.age * 100, 0) > 4000", table) == [False, False, False, False, True]
    assert flagged("lower(in.country) == 'xx'", table) == [True, False, False, True, False]
    assert flagged("upper(in.country) = 'XX'", table) == [True, False, False, True, False]
    assert flagged("length(in.country) != 2", table) == [False, False, False, False, True]


def test_min_and_max_propagate_null() -> None:
    t = pa.table({"in.a": pa.array([None, 5], pa.int64()), "in.b": pa.array([10, 10], pa.int64())})
    assert flagged("max(in.a, in.b) > 1", t) == [False, True]
    assert flagged("min(in.a, in.b) < 100", t) == [False, True]


def test_boolean_literals_and_boolean_columns() -> None:
    t = pa.table({"out.fraud": [True, False, None], "in.amount": [1, 2, 3]})
    assert flagged("out.fraud == true", t) == [True, False, False]
    assert flagged("out.fraud = FALSE", t) == [False, True, False]
    assert flagged("out.fraud == true or in.amount > 2", t) == [True, False, True]
    assert flagged("(in.amount > 1) == (out.fraud == false)", t) == [True, True, False]
    assert flagged("in.amount > 1 and true", t) == [False, True, True]


def test_column_names_are_exact_and_backticks_allow_any_name() -> None:
    t = pa.table({"out.my col": [1.0, 2.0], "out.nested.score": [0.1, 0.9], "out.Score": [3, 4]})
    assert flagged("`out.my col` > 1.5", t) == [False, True]
    assert flagged("out.nested.score > 0.5", t) == [False, True]
    assert flagged("out.Score == 3", t) == [True, False]
    assert flagged("`out.tick\\`name` > 0", pa.table({"out.tick`name": [1, 0]})) == [True, False]


def test_whitespace_and_newlines_are_ignored(table: pa.Table) -> None:
    assert flagged("  in.amount>1000\n\tand\r\nout.label==1  ", table) == [False, True, False, False, False]


def test_random_table_matches_numpy() -> None:
    rng = np.random.default_rng(7)
    p = rng.random(1000)
    amount = rng.integers(0, 3000, size=1000)
    t = pa.table({"out.probability": p, "in.amount": amount})
    assert np.array_equal(parse_rule("r", "out.probability > 0.9").evaluate(t).to_numpy(zero_copy_only=False), p > 0.9)
    combined = parse_rule("r", "out.probability > 0.9 or in.amount > 2500 and out.probability < 0.2").evaluate(t)
    expected = (p > 0.9) | ((amount > 2500) & (p < 0.2))
    assert np.array_equal(combined.to_numpy(zero_copy_only=False), expected)
    assert 0 < expected.sum() < 1000


def test_chunked_and_empty_tables() -> None:
    chunked = pa.concat_tables([pa.table({"in.a": [1, 5]}), pa.table({"in.a": [7]})])
    assert chunked.column("in.a").num_chunks == 2
    rule = parse_rule("r", "in.a > 2")
    result = rule.evaluate(chunked)
    assert isinstance(result, pa.BooleanArray)
    assert result.to_pylist() == [False, True, True]
    empty = rule.evaluate(pa.table({"in.a": pa.array([], pa.int64())}))
    assert isinstance(empty, pa.BooleanArray)
    assert len(empty) == 0


# --------------------------------------------------------------------------------------------------------------------
# Rule objects


def test_columns_are_extracted() -> None:
    rule = parse_rule("r", "abs(out.score - in.base) < 0.01 or `out.my col` == 'x' or in.base is null")
    assert rule.columns == frozenset({"out.score", "in.base", "out.my col"})
    assert rule.name == "r"
    assert rule.source == "abs(out.score - in.base) < 0.01 or `out.my col` == 'x' or in.base is null"
    assert parse_rule("r", "out.probability > 0.9").columns == frozenset({"out.probability"})


def test_rule_equality_ignores_expression_and_rules_pickle(table: pa.Table) -> None:
    a = parse_rule("r", "in.amount > 1000")
    b = parse_rule("r", "in.amount > 1000")
    assert a == b
    assert hash(a) == hash(b)
    assert a != parse_rule("r", "in.amount > 1001")
    copy = pickle.loads(pickle.dumps(a))
    assert isinstance(copy, Rule)
    assert copy.evaluate(table).to_pylist() == a.evaluate(table).to_pylist()


def test_parse_rules_keeps_order_and_reports_every_bad_rule() -> None:
    rules = parse_rules({"b_rule": "in.x > 1", "a_rule": "out.y < 2"})
    assert [r.name for r in rules] == ["b_rule", "a_rule"]
    assert parse_rules({}) == []
    with pytest.raises(InvalidInput) as info:
        parse_rules({"ok": "in.x > 1", "bad1": "in.x >", "bad2": "probability > 1"})
    message = info.value.message
    assert "'bad1'" in message
    assert "'bad2'" in message
    assert "'ok'" not in message
    with pytest.raises(InvalidInput, match="mapping"):
        parse_rules(["in.x > 1"])  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------------------------------------
# check_columns


def test_check_columns_accepts_known_columns() -> None:
    rules = parse_rules({"a": "in.amount > 1", "b": "out.probability > 0.9 and in.amount < 5"})
    check_columns(rules, {"in.amount", "out.probability", "out.label"})
    check_columns([], set())


def test_check_columns_names_rule_unknown_columns_and_known_ones() -> None:
    rules = parse_rules({"fine": "in.amount > 1", "high_risk": "out.probabilty > 0.9 and in.zzz == 1"})
    with pytest.raises(InvalidInput) as info:
        check_columns(rules, {"in.amount", "out.probability"})
    message = info.value.message
    assert "validation 'high_risk'" in message
    assert "'out.probabilty'" in message
    assert "'in.zzz'" in message
    assert "did you mean 'out.probability'?" in message
    assert "known columns are in.amount, out.probability" in message
    assert "'fine'" not in message


# --------------------------------------------------------------------------------------------------------------------
# flag_rows


def test_flag_rows_counts_rules_per_row(table: pa.Table) -> None:
    rules = parse_rules({"big": "in.amount > 1000", "sure": "out.probability > 0.9"})
    flags = flag_rows(rules, table)
    assert isinstance(flags, Flags)
    assert flags.errors == {}
    assert list(flags.columns) == ["anomaly.big", "anomaly.sure", COUNT_COLUMN]
    assert flags.columns["anomaly.big"].to_pylist() == [False, True, False, True, False]
    assert flags.columns["anomaly.sure"].to_pylist() == [False, True, True, False, False]
    count = flags.columns[COUNT_COLUMN]
    assert count.type == pa.int32()
    assert count.to_pylist() == [0, 2, 1, 1, 0]
    for column in flags.columns.values():
        assert isinstance(column, pa.Array)
        assert len(column) == table.num_rows
        assert column.null_count == 0
    # the flags form a valid table alongside the data
    assert pa.table(flags.columns).num_rows == table.num_rows


def test_flag_rows_without_rules_gives_zero_counts(table: pa.Table) -> None:
    flags = flag_rows([], table)
    assert list(flags.columns) == [COUNT_COLUMN]
    assert flags.columns[COUNT_COLUMN].to_pylist() == [0] * 5
    assert flags.columns[COUNT_COLUMN].type == pa.int32()
    assert flags.errors == {}


def test_missing_column_gives_all_false_and_an_error(table: pa.Table) -> None:
    rules = parse_rules({"ghost": "out.missing > 1", "big": "in.amount > 1000"})
    flags = flag_rows(rules, table)
    assert flags.columns["anomaly.ghost"].to_pylist() == [False] * 5
    assert flags.columns["anomaly.big"].to_pylist() == [False, True, False, True, False]
    assert flags.columns[COUNT_COLUMN].to_pylist() == [0, 1, 0, 1, 0]
    assert set(flags.errors) == {"ghost"}
    assert "'out.missing'" in flags.errors["ghost"]
    assert "in.amount" in flags.errors["ghost"]  # lists what the table has
    with pytest.raises(InvalidInput, match=r"out\.missing"):
        rules[0].evaluate(table)


def test_evaluation_failures_are_contained(table: pa.Table) -> None:
    t = table.append_column("out.vector", pa.array([[1.0], [2.0], [3.0], [4.0], [5.0]]))
    rules = parse_rules(
        {
            "string_vs_number": "in.country > 5",
            "list_column": "out.vector > 1",
            "overflow": "in.amount * 9000000000000000000 > 0",
            "good": "out.label == 1",
        }
    )
    flags = flag_rows(rules, t)
    assert set(flags.errors) == {"string_vs_number", "list_column", "overflow"}
    assert "in.country is string" in flags.errors["string_vs_number"]
    assert "out.vector is list" in flags.errors["list_column"]
    for name in ("string_vs_number", "list_column", "overflow"):
        assert flags.columns[f"anomaly.{name}"].to_pylist() == [False] * 5
    assert flags.columns["anomaly.good"].to_pylist() == [False, True, True, False, True]
    assert flags.columns[COUNT_COLUMN].to_pylist() == [0, 1, 1, 0, 1]
    with pytest.raises(InvalidInput, match="could not be evaluated"):
        rules[0].evaluate(t)


def test_flag_rows_rejects_duplicate_names(table: pa.Table) -> None:
    rule = parse_rule("dup", "in.amount > 1")
    with pytest.raises(InvalidInput, match="dup"):
        flag_rows([rule, rule], table)


# --------------------------------------------------------------------------------------------------------------------
# errors


@pytest.mark.parametrize(
    ("source", "fragments"),
    [
        ("out.probability > )", ["validation 'high_risk'", "unexpected ')'", "position 19", "out.probability > 0.9"]),
        ("", ["empty", "out.probability > 0.9"]),
        ("   \n ", ["empty"]),
        ("probability > 0.9", ["unknown name 'probability'", "position 1", "in.<name> or out.<name>"]),
        ("amount", ["unknown name 'amount'", "in.<name> or out.<name>"]),
        ("anomaly.count > 1", ["unknown column 'anomaly.count'", "in.<name> or out.<name>"]),
        ("IN.amount > 1", ["lowercase", "write in.amount"]),
        ("in > 1", ["'in' must be followed by '.'", "in.amount"]),
        ("in.1x > 1", ["expected a name after 'in.'", "backticks"]),
        ("`x.y` > 1", ["must start with in. or out."]),
        ("`in.` > 1", ["must start with in. or out."]),
        ("`in.a > 1", ["unterminated column name", "position 1"]),
        ("foo(out.x) > 1", ["unknown function 'foo'", "abs()"]),
        ("eval('1') > 1", ["unknown function 'eval'"]),
        ("in.country == 'XX", ["unterminated string", "position 15", "close it"]),
        ('in.country == "XX', ["unterminated string"]),
        ("in.country == 'a\\d'", ["unknown escape '\\d'", "backslash"]),
        ("in.a > 1 2", ["unexpected '2' after a complete condition", "position 10", "and / or"]),
        ("in.a > 1)", ["unexpected ')' after a complete condition"]),
        ("(in.a > 1", ["expected ')' to close the '(' at position 1", "end of input"]),
        ("in.a >", ["unexpected end of input after '>'"]),
        ("in.a > 1 and", ["unexpected end of input after 'and'"]),
        ("out.probability + 1", ["is a number, not a condition", "out.probability + 1 > 0.5"]),
        ("out.probability", ["is a column value, not a condition", "out.probability == true"]),
        ("abs(out.score)", ["is a number, not a condition"]),
        ("'yes'", ["is a string, not a condition"]),
        ("1 > 0", ["uses no column"]),
        ("true", ["uses no column"]),
        ("in.a > 1 and 2", ["'2' is a number", "'and' needs a condition"]),
        ("in.a or in.b > 1", ["'in.a' is a column value", "in.a == true"]),
        ("not in.a", ["'not' needs a condition after it"]),
        ("in.a + 'x' > 1", ["is a string", "'+' needs numbers"]),
        ("-'x' == in.a", ["'-' needs numbers"]),
        ("(in.a > 1) * 2 > 1", ["is a condition", "'*' needs numbers"]),
        ("in.a == null", ["comparing with null", "is null"]),
        ("null != in.a", ["comparing with null", "is not null"]),
        ("in.a is 1", ["expected null after 'is'", "is not null"]),
        ("in.a is not 1", ["expected null after 'is not'"]),
        ("1 < in.a < 2", ["chained comparison", "and"]),
        ("in.a is null is null", ["chained comparison"]),
        ("'a' > 1 and in.x > 1", ["cannot compare a string with a number"]),
        ("in.a & in.b", ["unexpected character '&'", "and"]),
        ("in.a | in.b", ["unexpected character '|'", "or"]),
        ("in.a % 2 == 0", ["'%'", "not supported"]),
        ("in.x in (1, 2)", ["membership tests are not supported"]),
        ("in.a > 1.2.3", ["malformed number '1.2.'"]),
        ("in.a > 12abc", ["malformed number"]),
        ("in.a > 99999999999999999999", ["too large", "float"]),
        ("abs(in.a, 2) > 1", ["abs() takes 1 argument, got 2"]),
        ("min(in.a) > 1", ["min() takes at least 2 arguments, got 1"]),
        ("abs() > 1", ["abs() takes 1 argument, got 0"]),
        ("lower(in.a) == 1", ["cannot compare a string with a number"]),
        ("abs('x') > in.a", ["needs a number"]),
        ("abs(in.a > 1 > 2", ["chained comparison"]),
        ("abs(in.a 2) > 1", ["expected ',' or ')' in the call to abs()"]),
        ("in.a > 1 and and in.b > 1", ["unexpected keyword 'and'"]),
        ("in.a ; drop table", ["unexpected character ';'"]),
        ("__import__('os') == 1", ["unknown function '__import__'"]),
        ("__import__('os').system('x')", ["unexpected character '.'"]),
        ("in.a > 1 # comment", ["unexpected character '#'"]),
        ("in.a\x00 > 1", ["unexpected character '\\x00'"]),
        ("in.a > \ud800", ["not valid text"]),
        ("x" * (MAX_SOURCE_CHARS + 1), [f"{MAX_SOURCE_CHARS + 1} characters long", "limit is 1000", "split"]),
        ("(" * (MAX_DEPTH + 1) + "in.a > 1" + ")" * (MAX_DEPTH + 1), ["more than 50 nested", "simplify"]),
        ("abs(" * (MAX_DEPTH + 1) + "in.a" + ")" * (MAX_DEPTH + 1) + " > 1", ["more than 50 nested"]),
        ("(" * 900, ["more than 50 nested"]),
    ],
)
def test_errors_are_invalid_input_with_helpful_messages(source: str, fragments: list[str]) -> None:
    message = error_of(source)
    assert message.startswith("validation 'high_risk'")
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"


def test_nesting_up_to_the_limit_is_fine(table: pa.Table) -> None:
    deep = "(" * MAX_DEPTH + "in.amount > 1000" + ")" * MAX_DEPTH
    assert flagged(deep, table) == [False, True, False, True, False]
    calls = "abs(" * MAX_DEPTH + "in.amount" + ")" * MAX_DEPTH + " > 1000"
    assert flagged(calls, table) == [False, True, False, True, False]
    # prefix operators and long chains are not nested, so they are limited only by the length
    assert flagged("not " * 200 + "in.amount > 1000", table) == [False, True, False, True, False]
    assert flagged("-" * 500 + "in.amount > 1000", table) == [False, True, False, True, False]
    assert flagged(" + ".join(["in.age"] * 100) + " > 3000", table) == [False, False, True, False, True]


def test_long_sources_are_quoted_around_the_problem() -> None:
    source = "in.a > 1 and " * 40 + "in.b > )"
    message = error_of(source)
    assert "…" in message
    assert "in.b > )" in message
    assert len(message) < 400


@pytest.mark.parametrize("name", ["", "1abc", "high risk", "a-b", "anomaly.x", "é", None, 3])
def test_bad_names(name: object) -> None:
    with pytest.raises(InvalidInput, match="letters, digits and '_'"):
        parse_rule(name, "in.a > 1")  # type: ignore[arg-type]


def test_count_is_reserved() -> None:
    with pytest.raises(InvalidInput, match="'count' is reserved"):
        parse_rule("count", "in.a > 1")
    assert parse_rule("Count", "in.a > 1").name == "Count"  # column names are case-sensitive: no clash


def test_source_must_be_a_string() -> None:
    with pytest.raises(InvalidInput, match="must be a string, got int"):
        parse_rule("r", 5)  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------------------------------------
# fuzzing: untrusted input never escapes as anything but InvalidInput

_FRAGMENTS = [
    "in.a", "out.b", "in.s", "`out.c d`", "1", "0.5", "1e-3", "-", "+", "*", "/", "(", ")", ",", "<", "<=", ">",
    ">=", "==", "=", "!=", "<>", "!", "and", "or", "not", "&&", "||", "is", "null", "true", "false", "'x'", '"y"',
    "abs(", "min(", "max(", "is_nan(", "lower(", "length(", " ", "in", ".", "'", "\\", "`", "9" * 25, "é",
]  # fmt: skip

_FUZZ_TABLE = pa.table(
    {
        "in.a": pa.array([1, None, -5], pa.int64()),
        "out.b": pa.array([0.5, math.nan, None], pa.float64()),
        "in.s": pa.array(["x", None, "Y"], pa.string()),
        "out.c d": pa.array([True, None, False], pa.bool_()),
    }
)


def _parse_or_invalid(source: str) -> Rule | None:
    try:
        return parse_rule("fuzz", source)
    except InvalidInput as exc:
        assert exc.message.startswith("validation 'fuzz'")
        return None


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.text(max_size=200))
def test_random_text_only_raises_invalid_input(source: str) -> None:
    _parse_or_invalid(source)


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.sampled_from(_FRAGMENTS), max_size=40).map(" ".join))
def test_token_soup_parses_or_raises_invalid_input_and_never_breaks_flag_rows(source: str) -> None:
    rule = _parse_or_invalid(source)
    if rule is None:
        return
    assert rule.columns <= set(_FUZZ_TABLE.column_names)
    flags = flag_rows([rule], _FUZZ_TABLE)
    column = flags.columns["anomaly.fuzz"]
    assert len(column) == 3
    assert column.null_count == 0
    assert flags.columns[COUNT_COLUMN].to_pylist() == [int(v) for v in column.to_pylist()]


_LEAVES = st.sampled_from(
    ["in.a", "out.b", "in.s", "`out.c d`", "in.gone", "1", "-2", "0.5", "1e3", "'x'", "null", "true"]
)


def _combine(children: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    binary = st.tuples(
        children,
        st.sampled_from(["+", "-", "*", "/", "<", "<=", ">", ">=", "==", "=", "!=", "<>", "and", "or", "&&", "||"]),
        children,
    ).map(" ".join)
    unary = st.tuples(st.sampled_from(["not ", "!", "-", "("]), children).map(
        lambda p: f"({p[1]})" if p[0] == "(" else p[0] + p[1]
    )
    calls = st.tuples(
        st.sampled_from(["abs", "min", "max", "is_nan", "lower", "length"]), st.lists(children, max_size=3)
    )
    tests = st.tuples(children, st.sampled_from(["is null", "is not null"])).map(" ".join)
    return binary | unary | calls.map(lambda c: f"{c[0]}({', '.join(c[1])})") | tests


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.recursive(_LEAVES, _combine, max_leaves=12))
def test_generated_expressions_parse_or_raise_invalid_input_and_never_break_flag_rows(source: str) -> None:
    rule = _parse_or_invalid(source)
    if rule is None:
        return
    flags = flag_rows([rule], _FUZZ_TABLE)
    column = flags.columns["anomaly.fuzz"]
    assert isinstance(column, pa.BooleanArray)
    assert len(column) == 3
    assert column.null_count == 0
    if "in.gone" in rule.columns:
        assert "fuzz" in flags.errors
    if flags.errors:
        assert column.to_pylist() == [False] * 3
