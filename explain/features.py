"""Between the pipeline's input table and the numeric matrix alibi works on.

Numeric columns are used as they are; string, boolean and dictionary columns are categorical and
ordinal-encoded (the codes index `categories`, alibi's `category_map`). Decoding turns a matrix back
into a table with the input's column types, so the pipeline sees rows shaped like real requests.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipelines.errors import InvalidInput


@dataclass
class FeatureSpace:
    names: list[str]
    types: list[pa.DataType]
    categories: dict[int, list[Any]] = field(default_factory=dict)

    @classmethod
    def of(cls, *tables: pa.Table) -> FeatureSpace:
        """The features of the first table; categories are collected over all of them (reference + instances)."""
        first = tables[0]
        names, types, categories = list(first.column_names), [], {}
        for i, name in enumerate(names):
            type_ = first.schema.field(name).type
            if pa.types.is_dictionary(type_):
                type_ = type_.value_type
            if _categorical(type_):
                seen: dict[Any, None] = {}
                for table in tables:
                    if name in table.column_names:
                        seen.update(dict.fromkeys(v for v in table.column(name).to_pylist() if v is not None))
                categories[i] = sorted(seen, key=str)
            elif not (pa.types.is_integer(type_) or pa.types.is_floating(type_)):
                raise InvalidInput(
                    f"input column {name!r} has type {type_}, which explanations cannot vary: explain "
                    "pipelines whose inputs are numbers, strings or booleans"
                )
            types.append(type_)
        return cls(names, types, categories)

    @property
    def category_map(self) -> dict[int, list[str]]:
        return {i: [str(v) for v in values] for i, values in self.categories.items()}

    def index(self, name: str) -> int:
        if name not in self.names:
            raise InvalidInput(f"unknown feature {name!r}: the pipeline's input columns are {self.names}")
        return self.names.index(name)

    def encode(self, table: pa.Table, what: str) -> np.ndarray:
        """The rows as a float matrix in feature order; a wrong shape is an InvalidInput naming `what`."""
        missing = [n for n in self.names if n not in table.column_names]
        extra = [n for n in table.column_names if n not in self.names]
        if missing or extra:
            raise InvalidInput(
                f"{what} do not have the pipeline's input columns: missing {missing}, unexpected {extra}. "
                f"Send rows with exactly the columns {self.names}"
            )
        matrix = np.empty((table.num_rows, len(self.names)), dtype=np.float64)
        for i, name in enumerate(self.names):
            column = table.column(name)
            if column.null_count:
                raise InvalidInput(f"{what} have nulls in column {name!r}: send complete rows")
            if i in self.categories:
                lookup = {v: code for code, v in enumerate(self.categories[i])}
                values = column.to_pylist()
                unknown = sorted({str(v) for v in values if v not in lookup})
                if unknown:
                    raise InvalidInput(f"{what}: column {name!r} has values {unknown[:5]} never seen in the reference")
                matrix[:, i] = [lookup[v] for v in values]
            else:
                try:
                    matrix[:, i] = pc.cast(column, pa.float64()).to_numpy()
                except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
                    raise InvalidInput(f"{what}: column {name!r} must be numeric like the reference") from None
        return matrix

    def decode(self, matrix: np.ndarray) -> pa.Table:
        """The inverse of `encode`: categorical codes back to values, integer columns rounded."""
        columns = []
        for i, type_ in enumerate(self.types):
            values = matrix[:, i]
            if i in self.categories:
                cats = self.categories[i]
                codes = np.clip(np.rint(values).astype(np.int64), 0, len(cats) - 1)
                columns.append(pa.array([cats[c] for c in codes], type=type_))
            elif pa.types.is_integer(type_):
                columns.append(pa.array(np.rint(values).astype(type_.to_pandas_dtype())))
            else:
                columns.append(pa.array(values.astype(type_.to_pandas_dtype()), type=type_))
        return pa.table(columns, names=self.names)



def _categorical(type_: pa.DataType) -> bool:
    return pa.types.is_string(type_) or pa.types.is_large_string(type_) or pa.types.is_boolean(type_)


def logged_feature_columns(table: pa.Table, instances: list[dict[str, Any]] | None) -> tuple[pa.Table, list[str]]:
    """The logged inputs without the columns only some requests sent, and their names.

    A window of logs spans every request shape it saw: a client that also sent, say, an `id` leaves a
    column that is null in every other row. Such a column (one with nulls) is not a feature when the
    instances do not have it, or, without instances, when most rows lack it. A column every logged
    row has stays, so an instance without it is still told what is missing.
    """
    wanted = {key for row in instances for key in row} if instances else None
    dropped = [
        name
        for name in table.column_names
        if (nulls := table.column(name).null_count)
        and (name not in wanted if wanted is not None else 2 * nulls > table.num_rows)
    ]
    return (table.drop_columns(dropped) if dropped else table), dropped


def drop_incomplete(table: pa.Table) -> tuple[pa.Table, int]:
    """Rows without nulls, and how many were dropped (logged inputs can have nulls; alibi cannot)."""
    if not any(table.column(n).null_count for n in table.column_names):
        return table, 0
    kept = table.drop_null()
    return kept, table.num_rows - kept.num_rows


def sample_rows(table: pa.Table, size: int, seed: int) -> pa.Table:
    """At most `size` rows, chosen uniformly without replacement (order kept), reproducible by seed."""
    if table.num_rows <= size:
        return table
    rows = np.sort(np.random.default_rng(seed).choice(table.num_rows, size=size, replace=False))
    return table.take(pa.array(rows))
