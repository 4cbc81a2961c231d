"""The pipeline as the numeric function alibi calls: matrix in, one target value (or label) per row out.

Every call goes to the pipeline in whole batches (chunked at `max_rows`), counts towards the
progress of the running explanation and checks its time budget, so an explanation past its budget
stops at its next predict call instead of running on.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa

from explain.features import FeatureSpace
from pipelines.errors import BudgetExceeded, InvalidInput

PredictTable = Callable[[pa.Table], pa.Table]
MAX_ROWS_PER_CALL = 20_000


@dataclass
class Progress:
    """What a running explanation has done so far (read by another thread for progress reports)."""

    method: str
    budget_s: float
    started: float = field(default_factory=time.monotonic)
    stage: str = "starting"
    predict_calls: int = 0
    rows_predicted: int = 0

    @property
    def elapsed_s(self) -> float:
        return time.monotonic() - self.started

    def check(self) -> None:
        if self.elapsed_s > self.budget_s:
            raise BudgetExceeded(
                f"the {self.method} explanation ran past its time budget of {self.budget_s:.3g} s "
                f"({self.predict_calls} predict calls, {self.rows_predicted:,} rows, stage: {self.stage}): "
                "raise params.timeout_s, explain fewer instances, or use a smaller reference_size/nsamples"
            )

    def report(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "stage": self.stage,
            "elapsed_s": round(self.elapsed_s, 3),
            "budget_s": self.budget_s,
            "predict_calls": self.predict_calls,
            "rows_predicted": self.rows_predicted,
        }


@dataclass(frozen=True)
class Target:
    """Which output of the pipeline is explained: a column, and an index when the column is a vector."""

    output: str
    index: int | None
    width: int | None  # None: a scalar column
    text: bool = False  # a string label column: given labels must be strings too

    @classmethod
    def choose(cls, outputs: pa.Table, output: str | None, index: int | None, want_labels: bool) -> Target:
        """The named output, else the first float (score) column, else the first column; a vector's
        default index is the last of two (the positive class), else 0."""
        if output is None:
            output = _default_output(outputs, want_labels)
        if output not in outputs.column_names:
            raise InvalidInput(
                f"the pipeline has no output {output!r}: use params.output = one of {outputs.column_names}"
            )
        type_ = outputs.schema.field(output).type
        width = _vector_width(outputs.column(output))
        if width is None and not (_numeric(type_) or pa.types.is_string(type_) or pa.types.is_boolean(type_)):
            raise InvalidInput(f"output {output!r} has type {type_}: explain a numeric, label or vector output")
        if width is None:
            if index is not None:
                raise InvalidInput(f"params.target indexes a vector output, but {output!r} is one value per row")
            return cls(output, None, None, text=pa.types.is_string(type_))
        chosen = index if index is not None else (1 if width == 2 else 0)
        if chosen >= width:
            raise InvalidInput(f"params.target={chosen} is out of range: output {output!r} has {width} values per row")
        return cls(output, chosen, width)

    def describe(self) -> str:
        return self.output if self.index is None else f"{self.output}[{self.index}]"


class Predictor:
    """Calls the pipeline for alibi. Thread-confined: one explanation at a time uses one instance."""

    def __init__(self, predict: PredictTable, space: FeatureSpace, max_rows: int = MAX_ROWS_PER_CALL) -> None:
        self.predict_table = predict
        self.space = space
        self.max_rows = max_rows
        self.progress: Progress | None = None
        self.target: Target | None = None
        self.label_codes: dict[Any, int] = {}
        self.lock = threading.Lock()  # a fitted explainer cached across requests is used by one at a time

    def outputs(self, matrix: np.ndarray) -> pa.Table:
        tables = []
        for start in range(0, max(len(matrix), 1), self.max_rows):
            chunk = matrix[start : start + self.max_rows]
            if self.progress is not None:
                self.progress.check()
            table = self.predict_table(self.space.decode(chunk))
            if table.num_rows != len(chunk):
                raise InvalidInput(
                    f"the pipeline returned {table.num_rows} rows for {len(chunk)}: explanations need one "
                    "output row per input row"
                )
            tables.append(table)
            if self.progress is not None:
                self.progress.predict_calls += 1
                self.progress.rows_predicted += len(chunk)
        return pa.concat_tables(tables) if len(tables) > 1 else tables[0]

    def _column(self, matrix: np.ndarray) -> pa.ChunkedArray:
        assert self.target is not None, "choose a target first"
        return self.outputs(matrix).column(self.target.output)

    def scores(self, matrix: np.ndarray) -> np.ndarray:
        """The target value per row as floats (labels and booleans as their codes)."""
        assert self.target is not None
        column = self._column(matrix)
        if self.target.index is not None:
            return _vector_values(column, self.target.index)
        type_ = column.type
        if _numeric(type_) or pa.types.is_boolean(type_):
            return np.asarray(column.to_numpy(zero_copy_only=False), dtype=np.float64)
        return self._codes(column).astype(np.float64)

    def labels(self, matrix: np.ndarray) -> np.ndarray:
        """The predicted class per row as an int code: argmax of a vector, the value of a label column."""
        assert self.target is not None
        column = self._column(matrix)
        if self.target.width is not None:
            return np.argmax(_vector_matrix(column), axis=1)
        if pa.types.is_floating(column.type):
            values = column.to_numpy(zero_copy_only=False)
            if not np.all(np.equal(np.mod(values, 1), 0)):
                raise InvalidInput(
                    f"output {self.target.output!r} is a continuous score, not a class: anchors and "
                    "classification metrics need a label output or a vector of class scores (params.output)"
                )
        return self._codes(column)

    def true_codes(self, labels: list[Any]) -> np.ndarray:
        """Given labels coded like `labels()` codes predictions (class indices for a vector output)."""
        assert self.target is not None
        if self.target.width is not None:
            if not all(isinstance(v, int) and 0 <= v < self.target.width for v in labels):
                raise InvalidInput(
                    f"output {self.target.output!r} holds {self.target.width} class scores: labels must be "
                    f"class indices 0..{self.target.width - 1}"
                )
            return np.asarray(labels, dtype=np.int64)
        if any(isinstance(v, str) != self.target.text for v in labels):
            kind = "strings" if self.target.text else "numbers or booleans"
            raise InvalidInput(
                f"output {self.target.output!r} holds {kind}: send labels of the same kind, as the pipeline "
                "answers them, so predictions and labels can be compared"
            )
        return self._codes_of(labels)

    def _codes(self, column: pa.ChunkedArray) -> np.ndarray:
        return self._codes_of(column.to_pylist())

    def _codes_of(self, values: list[Any]) -> np.ndarray:
        for value in values:
            if value not in self.label_codes:
                self.label_codes[value] = len(self.label_codes) if not isinstance(value, int | float) else int(value)
        return np.array([self.label_codes[v] for v in values], dtype=np.int64)

    def label_of(self, code: int) -> Any:
        """The output value behind a label code (for a vector output: the class index)."""
        for value, c in self.label_codes.items():
            if c == code:
                return value
        return code


def _numeric(type_: pa.DataType) -> bool:
    return pa.types.is_integer(type_) or pa.types.is_floating(type_)


def _vector_width(column: pa.ChunkedArray) -> int | None:
    type_ = column.type
    if pa.types.is_fixed_size_list(type_):
        return int(type_.list_size)
    if pa.types.is_list(type_) or pa.types.is_large_list(type_):
        first = next((v for v in column.to_pylist() if v is not None), None)
        return len(first) if first is not None else None
    return None


def _vector_matrix(column: pa.ChunkedArray) -> np.ndarray:
    array = column.combine_chunks()
    flat = np.asarray(array.flatten().to_numpy(zero_copy_only=False), dtype=np.float64)
    return flat.reshape(len(array), -1)


def _vector_values(column: pa.ChunkedArray, index: int) -> np.ndarray:
    return _vector_matrix(column)[:, index]


def _default_output(outputs: pa.Table, want_labels: bool) -> str:
    names = outputs.column_names
    if not names:
        raise InvalidInput("the pipeline returned no output columns: nothing to explain")
    if want_labels:
        return str(names[0])
    for name in names:
        type_ = outputs.schema.field(name).type
        if pa.types.is_floating(type_) or _vector_width(outputs.column(name)) is not None:
            return str(name)
    return str(names[0])
