"""Validations: untrusted boolean expressions over inference-log columns, compiled to Arrow expressions.

A validation is a short condition such as ``out.probability > 0.9`` or ``in.amount > 1000 and out.label == 1``.
Users write them, so the source is never handed to ``eval``, ``compile`` or the ``ast`` module: a small
tokenizer and a recursive-descent parser build a ``pyarrow.compute.Expression`` directly, and Arrow evaluates it.

Grammar, loosest binding first (keywords are case-insensitive, column names are not)::

    condition      := and_expr (("or" | "||") and_expr)*
    and_expr       := not_expr (("and" | "&&") not_expr)*
    not_expr       := ("not" | "!")* comparison
    comparison     := additive [ cmp_op additive | "is" ["not"] "null" ]   -- not chainable: a < b < c is rejected
    cmp_op         := "<" | "<=" | ">" | ">=" | "==" | "=" | "!=" | "<>"
    additive       := multiplicative (("+" | "-") multiplicative)*
    multiplicative := unary (("*" | "/") unary)*
    unary          := ("-" | "+")* primary
    primary        := number | string | "true" | "false" | "null" | column | function "(" args ")" | "(" condition ")"
    number         := 12 | 1.5 | .5 | 1e-3
    string         := 'text' | "text"          -- escapes: \\' \\" \\\\ \\n \\t
    column         := ("in" | "out") "." name ("." name)* | `in.any text` | `out.any text`

A column reference names the table column of exactly that full name: ``out.probability`` reads column
"out.probability". Functions (names case-insensitive):

    abs(x)              absolute value
    min(a, b, ...)      smallest argument (null if any argument is null)
    max(a, b, ...)      largest argument (null if any argument is null)
    is_nan(x)           true where a float is NaN
    length(s)           number of characters in a string
    lower(s), upper(s)  case conversion, for case-insensitive string comparisons

Semantics: SQL-like three-valued logic. A comparison involving null is null, ``null and false`` is false,
``null or true`` is true, ``not null`` is null, and a row is flagged only where its rule is definitely true.
NaN is not null (use ``is_nan``). ``/`` always divides as floats (``7 / 2`` is 3.5; ``x / 0`` is inf or NaN);
``+ - *`` raise on integer overflow, which fails the rule for that table.

Rules are checked statically where the answer cannot depend on the data: the whole rule must be a condition
(not ``out.probability + 1``), must name at least one column, ``and``/``or``/``not`` take conditions, arithmetic
takes numbers, and nothing is compared with the ``null`` literal (always null: write ``is null``).
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Final

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds

from pipelines.errors import InvalidInput

__all__ = [
    "ANOMALY_PREFIX",
    "COUNT_COLUMN",
    "FUNCTIONS",
    "MAX_DEPTH",
    "MAX_SOURCE_CHARS",
    "Flags",
    "Rule",
    "check_columns",
    "flag_rows",
    "parse_rule",
    "parse_rules",
]

MAX_SOURCE_CHARS: Final = 1000
MAX_DEPTH: Final = 50  # nested parentheses/function calls; keeps the parser far below Python's recursion limit
ANOMALY_PREFIX: Final = "anomaly."
COUNT_COLUMN: Final = "anomaly.count"
COLUMN_PREFIXES: Final = ("in", "out")
EXAMPLE: Final = "out.probability > 0.9"

_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*", re.ASCII)
_TOKEN_RE = re.compile(
    r"""
    (?P<ws>\s+)
    |(?P<num>(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)
    |(?P<name>[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*)
    |(?P<op><=|>=|==|!=|<>|&&|\|\||[<>=!+\-*/(),])
    """,
    re.VERBOSE | re.ASCII,  # ASCII: str.isdigit-style Unicode digits/letters must not slip into numbers or names
)
_ESCAPES: Final = {"'": "'", '"': '"', "\\": "\\", "n": "\n", "t": "\t", "`": "`"}
_CMP_OPS: Final = frozenset({"<", "<=", ">", ">=", "==", "=", "!=", "<>"})
_KEYWORDS: Final = frozenset({"and", "or", "not", "true", "false", "null", "is"})
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
# Arrow raises these for type mismatches (string vs number), overflow, bad casts, unsupported column types.
_EVAL_ERRORS: Final = (pa.ArrowException, TypeError, ValueError, OverflowError)

# Static kinds: what an expression is known to produce before seeing any data. Columns are ANY.
_BOOL, _NUM, _STR, _NULL, _ANY = "condition", "number", "string", "null", "column value"


@dataclass(frozen=True)
class _Token:
    kind: str  # "num" | "str" | "col" | "name" | "op" | "eof"
    text: str  # as written in the source
    pos: int  # 0-based offset of the first character
    value: object = None  # parsed literal for num/str, full column name for col


@dataclass(frozen=True)
class _Node:
    expr: pc.Expression
    kind: str
    start: int
    end: int
    literal: object = None  # Python value of a constant number, kept so unary minus folds into the literal


@dataclass(frozen=True)
class _Function:
    min_args: int
    max_args: int | None
    arg_kind: str
    result_kind: str
    build: Callable[[list[pc.Expression]], pc.Expression]
    example: str


FUNCTIONS: Final[Mapping[str, _Function]] = {
    "abs": _Function(1, 1, _NUM, _NUM, lambda a: pc.abs_checked(a[0]), "abs(out.score - 0.5) < 0.01"),
    # skip_nulls=False so a null argument gives null, like every other operator here.
    "min": _Function(2, None, _NUM, _NUM, lambda a: pc.min_element_wise(*a, skip_nulls=False), "min(in.a, in.b) > 10"),
    "max": _Function(2, None, _NUM, _NUM, lambda a: pc.max_element_wise(*a, skip_nulls=False), "max(in.a, in.b) < 100"),
    "is_nan": _Function(1, 1, _NUM, _BOOL, lambda a: pc.is_nan(a[0]), "is_nan(out.score)"),
    "length": _Function(1, 1, _STR, _NUM, lambda a: pc.utf8_length(a[0]), "length(in.country) != 2"),
    "lower": _Function(1, 1, _STR, _STR, lambda a: pc.utf8_lower(a[0]), "lower(in.country) == 'xx'"),
    "upper": _Function(1, 1, _STR, _STR, lambda a: pc.utf8_upper(a[0]), "upper(in.country) == 'XX'"),
}


@dataclass(frozen=True)
class Rule:
    """One parsed validation. Equality and hashing ignore ``expression`` (Arrow expressions overload ``==``)."""

    name: str
    source: str
    columns: frozenset[str]
    expression: pc.Expression = field(compare=False, repr=False)

    @property
    def column_name(self) -> str:
        """The output column this rule fills, ``anomaly.<name>``."""
        return ANOMALY_PREFIX + self.name

    def evaluate(self, table: pa.Table) -> pa.BooleanArray:
        """True where the rule definitely holds (null counts as false). Raises InvalidInput if it cannot run."""
        missing = sorted(self.columns - set(table.column_names))
        if missing:
            raise InvalidInput(_missing_message(self, missing, table))
        try:
            return _project(table, {self.name: self.expression})[self.name]
        except _EVAL_ERRORS as exc:
            raise InvalidInput(_failure_message(self, exc, table)) from None


@dataclass(frozen=True)
class Flags:
    """Result of :func:`flag_rows`.

    ``columns`` maps ``anomaly.<name>`` to a BooleanArray per rule (in rule order) and ends with ``anomaly.count``,
    an int32 array counting the rules true on each row. ``errors`` maps the name of each rule that could not run on
    this table (missing column, type mismatch, overflow) to a message; such a rule's column is all false.
    """

    columns: dict[str, pa.Array]
    errors: dict[str, str]


def parse_rule(name: str, source: str) -> Rule:
    """Parse one validation; raises InvalidInput saying what is wrong, where, and how to fix it."""
    if not isinstance(name, str) or not _NAME_RE.fullmatch(name):
        raise InvalidInput(
            f"validation name {name!r} is not valid: names become columns anomaly.<name>, so use letters, digits "
            "and '_', starting with a letter or '_', e.g. high_risk"
        )
    if name == "count":
        raise InvalidInput(
            "validation name 'count' is reserved: the column anomaly.count holds the number of failed validations "
            "per row; choose another name, e.g. count_check"
        )
    if not isinstance(source, str):
        raise InvalidInput(
            f"validation {name!r}: the expression must be a string, got {type(source).__name__}: "
            f"write a condition such as {EXAMPLE}"
        )
    if len(source) > MAX_SOURCE_CHARS:
        raise InvalidInput(
            f"validation {name!r}: the expression is {len(source)} characters long, the limit is {MAX_SOURCE_CHARS}: "
            "split it into several validations"
        )
    try:
        source.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InvalidInput(
            f"validation {name!r}: the expression is not valid text (character {exc.start + 1} is a lone surrogate): "
            "send it as UTF-8"
        ) from None
    if not source.strip():
        raise InvalidInput(f"validation {name!r}: the expression is empty: write a condition such as {EXAMPLE}")
    parser = _Parser(name, source)
    try:
        expression = parser.parse()  # fills parser.columns
    except RecursionError:
        # MAX_DEPTH keeps the parser under ~600 frames; this only triggers when called from an already deep stack.
        raise InvalidInput(f"validation {name!r}: the expression is nested too deeply: simplify it") from None
    return Rule(name=name, source=source, columns=frozenset(parser.columns), expression=expression)


def parse_rules(validations: Mapping[str, str]) -> list[Rule]:
    """Parse every validation, in order. One InvalidInput lists the problems of all the bad ones."""
    if not isinstance(validations, Mapping):
        raise InvalidInput(
            f"validations must be a mapping of name to expression, got {type(validations).__name__}: "
            f"e.g. {{'high_risk': '{EXAMPLE}'}}"
        )
    rules: list[Rule] = []
    problems: list[str] = []
    for name, source in validations.items():
        try:
            rules.append(parse_rule(name, source))
        except InvalidInput as exc:
            problems.append(exc.message)
    if problems:
        raise InvalidInput("; ".join(problems))
    return rules


def check_columns(rules: list[Rule], known: set[str]) -> None:
    """Raise InvalidInput if any rule reads a column outside ``known`` (e.g. the pipeline's input/output schema)."""
    problems = []
    for rule in rules:
        unknown = sorted(rule.columns - known)
        if not unknown:
            continue
        described = []
        for column in unknown:
            close = difflib.get_close_matches(column, sorted(known), n=1)
            described.append(f"{column!r} (did you mean {close[0]!r}?)" if close else repr(column))
        problems.append(f"validation {rule.name!r} uses unknown column(s) {', '.join(described)}")
    if problems:
        listing = ", ".join(sorted(known)) if known else "(none)"
        raise InvalidInput(f"{'; '.join(problems)}: the known columns are {listing}")


def flag_rows(rules: list[Rule], table: pa.Table) -> Flags:
    """Evaluate every rule on ``table``. Never raises for data problems: they go to ``Flags.errors``."""
    names = [rule.name for rule in rules]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise InvalidInput(f"validation names must be unique, repeated: {', '.join(duplicates)}")
    present = set(table.column_names)
    errors: dict[str, str] = {}
    runnable: list[Rule] = []
    for rule in rules:
        missing = sorted(rule.columns - present)
        if missing:
            errors[rule.name] = _missing_message(rule, missing, table)
        else:
            runnable.append(rule)
    results: dict[str, pa.BooleanArray] = {}
    if runnable:
        try:
            # One scan for all rules is the common, fast path; only on failure find out which rule broke.
            results = _project(table, {rule.name: rule.expression for rule in runnable})
        except _EVAL_ERRORS:
            for rule in runnable:
                try:
                    results.update(_project(table, {rule.name: rule.expression}))
                except _EVAL_ERRORS as exc:
                    errors[rule.name] = _failure_message(rule, exc, table)
    rows = table.num_rows
    count = np.zeros(rows, dtype=np.int32)
    all_false = pa.array(np.zeros(rows, dtype=np.bool_), pa.bool_())
    columns: dict[str, pa.Array] = {}
    for rule in rules:
        flags = results.get(rule.name)
        if flags is None:
            columns[rule.column_name] = all_false
        else:
            columns[rule.column_name] = flags
            count += flags.to_numpy(zero_copy_only=False)
    columns[COUNT_COLUMN] = pa.array(count, pa.int32())
    return Flags(columns=columns, errors=errors)


def _project(table: pa.Table, expressions: dict[str, pc.Expression]) -> dict[str, pa.BooleanArray]:
    """Evaluate boolean expressions over ``table``; null becomes false. Raises Arrow's errors unchanged."""
    result = ds.dataset(table).to_table(columns=expressions)
    out: dict[str, pa.BooleanArray] = {}
    for key in expressions:
        values = result.column(key).combine_chunks()
        if not pa.types.is_boolean(values.type):
            raise TypeError(f"the expression gives {values.type} values, not true/false")
        out[key] = pc.fill_null(values, False)
    return out


def _missing_message(rule: Rule, missing: list[str], table: pa.Table) -> str:
    return (
        f"validation {rule.name!r} was not checked: column(s) {', '.join(map(repr, missing))} are not in the table "
        f"(it has {', '.join(table.column_names) or 'no columns'}): fix the expression {rule.source!r} "
        "or make the pipeline produce the column"
    )


def _failure_message(rule: Rule, exc: Exception, table: pa.Table) -> str:
    types = ", ".join(f"{c} is {table.schema.field(c).type}" for c in sorted(rule.columns))
    reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return (
        f"validation {rule.name!r} could not be evaluated: {reason} (column types: {types}): "
        f"compare columns with values of the same type in {rule.source!r}, e.g. numbers with numbers "
        "and strings with quoted strings"
    )


def _snippet(source: str, pos: int | None = None, width: int = 70) -> str:
    """The source, quoted, cut to a window around ``pos`` when long; control characters shown as spaces."""
    text = "".join(ch if ch.isprintable() else " " for ch in source)
    if len(text) <= width:
        return f"'{text}'"
    center = 0 if pos is None else pos
    start = max(0, min(center - width // 2, len(text) - width))
    end = start + width
    return f"'{'…' if start else ''}{text[start:end]}{'…' if end < len(text) else ''}'"


def _show(text: str) -> str:
    return repr(text) if text else "end of input"


class _Parser:
    """Tokenizes on construction, then :meth:`parse` builds the expression. One instance per validation."""

    def __init__(self, name: str, source: str) -> None:
        self.name = name
        self.source = source
        self.columns: set[str] = set()
        self.depth = 0
        self.tokens = self._tokenize()
        self.index = 0

    # -- errors ------------------------------------------------------------------------------------------------

    def error(self, pos: int, what: str, hint: str) -> InvalidInput:
        return InvalidInput(
            f"validation {self.name!r}: {what} at position {pos + 1} in {_snippet(self.source, pos)}: {hint}"
        )

    def whole_error(self, what: str, hint: str) -> InvalidInput:
        return InvalidInput(f"validation {self.name!r}: {_snippet(self.source)} {what}: {hint}")

    # -- tokenizer ---------------------------------------------------------------------------------------------

    def _tokenize(self) -> list[_Token]:
        src = self.source
        tokens: list[_Token] = []
        pos = 0
        while pos < len(src):
            ch = src[pos]
            if ch in "'\"`":
                token, pos = self._quoted(pos)
                tokens.append(token)
                continue
            match = _TOKEN_RE.match(src, pos)
            if match is None:
                raise self._bad_character(pos)
            kind = match.lastgroup or ""
            text = match.group()
            end = match.end()
            if kind == "num":
                tokens.append(self._number(text, pos, end))
            elif kind == "name":
                if end < len(src) and src[end] == ".":
                    raise self.error(
                        end,
                        f"expected a name after '{text}.'",
                        "column names start with a letter or '_'; quote other names in backticks, e.g. `out.my column`",
                    )
                tokens.append(_Token("name", text, pos))
            elif kind == "op":
                tokens.append(_Token("op", text, pos))
            pos = end
        tokens.append(_Token("eof", "", len(src)))
        return tokens

    def _bad_character(self, pos: int) -> InvalidInput:
        ch = self.source[pos]
        hints = {
            "&": "write 'and' (or '&&') to require both conditions",
            "|": "write 'or' (or '||') to accept either condition",
            "%": "the modulo operator is not supported; use +, -, * and /",
            ".": "columns are written in.<name> or out.<name> with no spaces around the dot",
            "[": "indexing is not supported; compare whole columns, e.g. out.probability > 0.9",
        }
        hint = hints.get(ch, f"use columns, numbers, quoted strings, comparisons and and/or/not, e.g. {EXAMPLE}")
        return self.error(pos, f"unexpected character {ch!r}", hint)

    def _number(self, text: str, start: int, end: int) -> _Token:
        src = self.source
        if end < len(src) and (src[end].isalnum() or src[end] in "_."):
            raise self.error(start, f"malformed number {src[start : end + 1]!r}", "write numbers like 12, 0.5 or 1e-3")
        if any(c in text for c in ".eE"):
            return _Token("num", text, start, float(text))
        value = int(text)
        if not _INT64_MIN <= value <= _INT64_MAX:
            raise self.error(start, f"integer {text} is too large", f"write it as a float, e.g. {float(value):.6g}")
        return _Token("num", text, start, value)

    def _quoted(self, start: int) -> tuple[_Token, int]:
        """A string literal ('...' or "...") or a backtick-quoted column name; returns the token and the next pos."""
        src = self.source
        quote = src[start]
        chars: list[str] = []
        pos = start + 1
        while pos < len(src):
            ch = src[pos]
            if ch == quote:
                return self._quoted_token(start, pos + 1, "".join(chars)), pos + 1
            if ch == "\\":
                nxt = src[pos + 1 : pos + 2]
                if nxt not in _ESCAPES:
                    raise self.error(
                        pos,
                        f"unknown escape '\\{nxt}'",
                        "inside quotes write \\' or \\\" for a quote, \\\\ for a backslash, \\n or \\t",
                    )
                chars.append(_ESCAPES[nxt])
                pos += 2
                continue
            chars.append(ch)
            pos += 1
        what = "column name" if quote == "`" else "string"
        raise self.error(start, f"unterminated {what} starting with {quote}", f"close it with a matching {quote}")

    def _quoted_token(self, start: int, end: int, value: str) -> _Token:
        text = self.source[start:end]
        if text[0] != "`":
            return _Token("str", text, start, value)
        prefix, dot, rest = value.partition(".")
        if prefix not in COLUMN_PREFIXES or not dot or not rest:
            raise self.error(
                start,
                f"backtick-quoted column {text} must start with in. or out. followed by a name",
                "write e.g. `out.my column`",
            )
        return _Token("col", text, start, value)

    # -- parser helpers ----------------------------------------------------------------------------------------

    @property
    def peek(self) -> _Token:
        return self.tokens[self.index]

    def advance(self) -> _Token:
        token = self.tokens[self.index]
        if token.kind != "eof":
            self.index += 1
        return token

    @staticmethod
    def is_op(token: _Token, *ops: str) -> bool:
        return token.kind == "op" and token.text in ops

    @staticmethod
    def is_kw(token: _Token, *words: str) -> bool:
        return token.kind == "name" and token.text.lower() in words

    def text(self, node: _Node) -> str:
        return self.source[node.start : node.end]

    def need(self, node: _Node, kinds: tuple[str, ...], what: str, hint: str) -> None:
        if node.kind not in kinds:
            raise self.error(node.start, f"{self.text(node)!r} is a {node.kind}, but {what}", hint)

    def need_condition(self, node: _Node, op: _Token) -> None:
        example = f"{self.text(node)} == true" if node.kind == _ANY else f"{self.text(node)} > 0"
        where = "after" if op.text.lower() in ("not", "!") else "on each side of"
        self.need(node, (_BOOL,), f"{op.text!r} needs a condition {where} it", f"compare it, e.g. {example}")

    def need_number(self, node: _Node, op: _Token) -> None:
        self.need(
            node, (_NUM, _ANY), f"{op.text!r} needs numbers", "use numbers or numeric columns, e.g. out.score - 0.5"
        )

    def descend(self, opening: _Token) -> None:
        """Count one more level of parentheses or function call; the caller decrements after the closing ')'."""
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise self.error(
                opening.pos, f"more than {MAX_DEPTH} nested parentheses or function calls", "simplify the expression"
            )

    # -- grammar -----------------------------------------------------------------------------------------------

    def parse(self) -> pc.Expression:
        node = self.condition()
        token = self.peek
        if token.kind != "eof":
            hint = (
                "membership tests are not supported: write in.country == 'US' or in.country == 'XX'"
                if self.is_kw(token, "in")
                else "join conditions with and / or, e.g. in.amount > 1000 and out.label == 1"
            )
            raise self.error(token.pos, f"unexpected {_show(token.text)} after a complete condition", hint)
        if node.kind != _BOOL:
            src = self.source.strip()
            suffix = {_ANY: "== true", _STR: "== 'text'", _NULL: "is null"}.get(node.kind, "> 0.5")
            example = f"{src} {suffix}"
            raise self.whole_error(f"is a {node.kind}, not a condition", f"compare it, e.g. {example}")
        if not self.columns:
            raise self.whole_error(
                "uses no column, so it would flag every row or none",
                f"refer to in.<name> or out.<name>, e.g. {EXAMPLE}",
            )
        return node.expr

    def condition(self) -> _Node:
        left = self.and_expr()
        while self.is_kw(self.peek, "or") or self.is_op(self.peek, "||"):
            op = self.advance()
            right = self.and_expr()
            self.need_condition(left, op)
            self.need_condition(right, op)
            left = _Node(left.expr | right.expr, _BOOL, left.start, right.end)
        return left

    def and_expr(self) -> _Node:
        left = self.not_expr()
        while self.is_kw(self.peek, "and") or self.is_op(self.peek, "&&"):
            op = self.advance()
            right = self.not_expr()
            self.need_condition(left, op)
            self.need_condition(right, op)
            left = _Node(left.expr & right.expr, _BOOL, left.start, right.end)
        return left

    def not_expr(self) -> _Node:
        # Prefix operators are collected in a loop, not by recursion, so `not not not ...` cannot exhaust the stack.
        negations: list[_Token] = []
        while self.is_kw(self.peek, "not") or self.is_op(self.peek, "!"):
            negations.append(self.advance())
        node = self.comparison()
        for op in reversed(negations):
            self.need_condition(node, op)
            node = _Node(~node.expr, _BOOL, op.pos, node.end)
        return node

    def comparison(self) -> _Node:
        left = self.additive()
        token = self.peek
        if token.kind == "op" and token.text in _CMP_OPS:
            self.advance()
            right = self.additive()
            node = self.compare(left, token, right)
        elif self.is_kw(token, "is"):
            self.advance()
            negated = self.is_kw(self.peek, "not")
            if negated:
                self.advance()
            if not self.is_kw(self.peek, "null"):
                raise self.error(
                    self.peek.pos,
                    f"expected null after '{self.source[token.pos : self.peek.pos].strip()}', "
                    f"found {_show(self.peek.text)}",
                    "write x is null or x is not null; compare values with == or !=",
                )
            end = self.advance()
            # nan_is_null=False: NaN is a value, not a missing one; is_nan(x) tests for it.
            expr = left.expr.is_null(nan_is_null=False)
            node = _Node(~expr if negated else expr, _BOOL, left.start, end.pos + len(end.text))
        else:
            return left
        following = self.peek
        if (following.kind == "op" and following.text in _CMP_OPS) or self.is_kw(following, "is"):
            raise self.error(
                following.pos,
                f"chained comparison {following.text!r}",
                "join comparisons with and, e.g. 0 < in.age and in.age < 120",
            )
        return node

    def compare(self, left: _Node, op: _Token, right: _Node) -> _Node:
        for side in (left, right):
            if side.kind == _NULL:
                raise self.error(
                    side.start,
                    f"comparing with null using {op.text!r}",
                    "a comparison with null is never true; write x is null or x is not null",
                )
        known = {_NUM, _STR, _BOOL}
        if left.kind in known and right.kind in known and left.kind != right.kind:
            raise self.error(
                op.pos,
                f"cannot compare a {left.kind} with a {right.kind} using {op.text!r}",
                "compare numbers with numbers and strings with quoted strings, e.g. in.country == 'XX'",
            )
        builders: dict[str, Callable[[pc.Expression, pc.Expression], pc.Expression]] = {
            "<": pc.less,
            "<=": pc.less_equal,
            ">": pc.greater,
            ">=": pc.greater_equal,
            "==": pc.equal,
            "=": pc.equal,
            "!=": pc.not_equal,
            "<>": pc.not_equal,
        }
        return _Node(builders[op.text](left.expr, right.expr), _BOOL, left.start, right.end)

    def additive(self) -> _Node:
        left = self.multiplicative()
        while self.is_op(self.peek, "+", "-"):
            op = self.advance()
            right = self.multiplicative()
            self.need_number(left, op)
            self.need_number(right, op)
            build = pc.add_checked if op.text == "+" else pc.subtract_checked
            left = _Node(build(left.expr, right.expr), _NUM, left.start, right.end)
        return left

    def multiplicative(self) -> _Node:
        left = self.unary()
        while self.is_op(self.peek, "*", "/"):
            op = self.advance()
            right = self.unary()
            self.need_number(left, op)
            self.need_number(right, op)
            if op.text == "*":
                expr = pc.multiply_checked(left.expr, right.expr)
            else:
                # Arrow divides integers by truncating; users writing 7 / 2 expect 3.5. Multiplying by 1.0 promotes
                # ints and decimals to float but, unlike a cast, still rejects strings.
                expr = pc.divide(pc.multiply(left.expr, pc.scalar(1.0)), right.expr)
            left = _Node(expr, _NUM, left.start, right.end)
        return left

    def unary(self) -> _Node:
        signs: list[_Token] = []
        while self.is_op(self.peek, "-", "+"):
            signs.append(self.advance())
        node = self.primary()
        for op in reversed(signs):
            self.need_number(node, op)
            if op.text == "+":
                node = _Node(node.expr, node.kind, op.pos, node.end, node.literal)
            elif isinstance(node.literal, int | float) and not isinstance(node.literal, bool):
                value = -node.literal
                if isinstance(value, int) and not _INT64_MIN <= value <= _INT64_MAX:
                    raise self.error(op.pos, "integer is too large", "write it as a float, e.g. 1e19")
                node = _Node(pc.scalar(value), _NUM, op.pos, node.end, value)
            else:
                node = _Node(pc.negate_checked(node.expr), _NUM, op.pos, node.end)
        return node

    def primary(self) -> _Node:
        token = self.peek
        end = token.pos + len(token.text)
        if token.kind == "num":
            self.advance()
            return _Node(pc.scalar(token.value), _NUM, token.pos, end, token.value)
        if token.kind == "str":
            self.advance()
            return _Node(pc.scalar(token.value), _STR, token.pos, end)
        if token.kind == "col":
            self.advance()
            return self.column(str(token.value), token.pos, end)
        if self.is_op(token, "("):
            return self.parenthesised()
        if token.kind == "name":
            return self.identifier()
        what = "unexpected end of input" if token.kind == "eof" else f"unexpected {_show(token.text)}"
        if token.kind == "eof" and self.index > 0:
            what += f" after {self.tokens[self.index - 1].text!r}"
        raise self.error(
            token.pos,
            what,
            f"expected a value here: a column such as out.probability, a number, a quoted string, true, false "
            f"or null; write a comparison such as {EXAMPLE}",
        )

    def parenthesised(self) -> _Node:
        opening = self.advance()
        self.descend(opening)
        inner = self.condition()
        self.depth -= 1
        closing = self.peek
        if not self.is_op(closing, ")"):
            raise self.error(
                closing.pos,
                f"expected ')' to close the '(' at position {opening.pos + 1}, found {_show(closing.text)}",
                "balance the parentheses",
            )
        self.advance()
        return _Node(inner.expr, inner.kind, opening.pos, closing.pos + 1, inner.literal)

    def identifier(self) -> _Node:
        token = self.advance()
        text = token.text
        end = token.pos + len(text)
        lower = text.lower()
        if "." in text:
            prefix = text.split(".", 1)[0]
            if prefix in COLUMN_PREFIXES:
                return self.column(text, token.pos, end)
            hint = (
                f"column prefixes are lowercase: write {prefix.lower()}.{text.split('.', 1)[1]}"
                if prefix.lower() in COLUMN_PREFIXES
                else "columns are written in.<name> or out.<name>, e.g. out.probability"
            )
            raise self.error(token.pos, f"unknown column {text!r}", hint)
        if self.is_op(self.peek, "("):
            return self.call(token)
        if lower in ("true", "false"):
            return _Node(pc.scalar(lower == "true"), _BOOL, token.pos, end, lower == "true")
        if lower == "null":
            return _Node(pc.scalar(None), _NULL, token.pos, end)
        if lower in _KEYWORDS:
            raise self.error(
                token.pos,
                f"unexpected keyword {text!r}",
                f"expected a value here; write a comparison such as {EXAMPLE}, and 'not' before a whole condition",
            )
        if text in COLUMN_PREFIXES:
            raise self.error(
                token.pos, f"{text!r} must be followed by '.' and a column name", f"write e.g. {text}.amount"
            )
        raise self.error(
            token.pos,
            f"unknown name {text!r}",
            f"columns are written in.<name> or out.<name>, e.g. in.{text} or out.{text}; quote strings, e.g. '{text}'",
        )

    def column(self, full_name: str, start: int, end: int) -> _Node:
        self.columns.add(full_name)
        return _Node(pc.field(full_name), _ANY, start, end)

    def call(self, token: _Token) -> _Node:
        function = FUNCTIONS.get(token.text.lower())
        if function is None:
            raise self.error(
                token.pos,
                f"unknown function {token.text!r}",
                f"available functions are {', '.join(f'{f}()' for f in FUNCTIONS)}",
            )
        self.descend(self.advance())
        args: list[_Node] = []
        if not self.is_op(self.peek, ")"):
            args.append(self.condition())
            while self.is_op(self.peek, ","):
                self.advance()
                args.append(self.condition())
        closing = self.peek
        if not self.is_op(closing, ")"):
            raise self.error(
                closing.pos,
                f"expected ',' or ')' in the call to {token.text}(), found {_show(closing.text)}",
                "separate arguments with commas and close the call with ')'",
            )
        self.advance()
        self.depth -= 1
        name = token.text.lower()
        count = len(args)
        if count < function.min_args or (function.max_args is not None and count > function.max_args):
            exact = function.max_args == function.min_args
            expected = f"{'' if exact else 'at least '}{function.min_args} argument{'' if exact else 's'}"
            raise self.error(token.pos, f"{name}() takes {expected}, got {count}", f"e.g. {function.example}")
        for arg in args:
            if arg.kind not in (function.arg_kind, _ANY):
                raise self.error(
                    arg.start,
                    f"{self.text(arg)!r} is a {arg.kind}, but {name}() needs a {function.arg_kind}",
                    f"pass a {function.arg_kind} or a column",
                )
        return _Node(function.build([a.expr for a in args]), function.result_kind, token.pos, closing.pos + 1)
