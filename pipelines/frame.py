"""Frames: small tables as numpy columns, the fast path of the built-in steps and the codecs.

A request of a few rows costs more in Arrow's per-call overhead (building tables, fields and
arrays, each a few microseconds) than in the computation itself. When every column is a number or
a boolean without nulls, a request travels instead as a `Frame`: column names and numpy arrays,
1-D for plain columns and 2-D [N, k] for fixed-size lists (tensors). Built-in steps and ONNX steps
take a Frame through `on_frame` and give one back; anything a Frame cannot hold (nulls, strings,
variable lists, field metadata), and every step without `on_frame` (user code), takes the table
path: `to_arrow()` is exact, so outputs, replies and log rows never depend on the path taken.

Frames are immutable by convention: steps build new arrays and never write into the ones they get
(shadows and the log share the request's frame).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, TypeAlias

import numpy as np
import pyarrow as pa

from pipelines.tensors import matrix_to_column, numpy_to_arrow

# numpy kinds a Frame column may have: bool, signed and unsigned integers, floats.
_KINDS = frozenset("biuf")

# What one column of a Frame is, for grouping frames that concatenate into one table.
ColumnKind: TypeAlias = tuple[str, np.dtype[Any], int]


@dataclass(frozen=True, slots=True)
class Frame:
    """Column names and numpy columns of equal length (see the module docstring)."""

    names: tuple[str, ...]
    columns: tuple[np.ndarray, ...]
    num_rows: int

    @property
    def column_names(self) -> list[str]:
        return list(self.names)

    def index(self, name: str) -> int:
        """The position of column `name`, or -1."""
        try:
            return self.names.index(name)
        except ValueError:
            return -1

    def column(self, name: str) -> np.ndarray:
        return self.columns[self.names.index(name)]

    def with_columns(self, changes: dict[str, np.ndarray]) -> Frame:
        """Replace columns in place by name; new names are appended in the order given."""
        names, columns = list(self.names), list(self.columns)
        for name, values in changes.items():
            try:
                columns[names.index(name)] = values
            except ValueError:
                names.append(name)
                columns.append(values)
        return Frame(tuple(names), tuple(columns), self.num_rows)

    @property
    def signature(self) -> tuple[ColumnKind, ...]:
        """Names, dtypes and widths: frames with equal signatures concatenate into one table."""
        return tuple(
            (name, column.dtype, column.shape[1] if column.ndim == 2 else 0)
            for name, column in zip(self.names, self.columns, strict=True)
        )

    def to_arrow(self) -> pa.Table:
        """The same table the table path would have made of these values."""
        arrays = [_to_arrow(column) for column in self.columns]
        return pa.Table.from_arrays(arrays, names=list(self.names))

    @classmethod
    def from_arrow(cls, table: pa.Table) -> Frame | None:
        """Numpy views of `table`'s columns, or None when a column is not plain numbers or booleans
        without nulls (or a fixed-size list of them), or the schema carries metadata or
        non-nullable fields that a Frame would drop."""
        schema = table.schema
        try:
            names = schema.names
        except UnicodeDecodeError:  # a field name that is not UTF-8: the table path reports it
            return None
        if schema.metadata or len(set(names)) != len(names):
            return None
        columns = []
        for field, column in zip(schema, table.columns, strict=True):
            values = _from_arrow(field, column)
            if values is None:
                return None
            columns.append(values)
        return cls(tuple(names), tuple(columns), table.num_rows)

    @classmethod
    def concat(cls, frames: Sequence[Frame]) -> Frame:
        """Frames of one signature as one frame, rows in order."""
        first = frames[0]
        if len(frames) == 1:
            return first
        columns = tuple(np.concatenate([f.columns[i] for f in frames]) for i in range(len(first.names)))
        return cls(first.names, columns, sum(f.num_rows for f in frames))


Data: TypeAlias = pa.Table | Frame


def as_table(data: Data) -> pa.Table:
    """The table of a Frame (or the table itself): for code that needs Arrow."""
    return data if isinstance(data, pa.Table) else data.to_arrow()


def frame_of(data: Data) -> Frame | None:
    """`data` as a Frame when its columns allow one (see Frame.from_arrow)."""
    return data if isinstance(data, Frame) else Frame.from_arrow(data)


def concat_tables(items: Iterable[Data]) -> pa.Table:
    """Many requests' tables or frames as one table (frames of one signature joined in numpy first)."""
    items = list(items)
    if items and all(isinstance(i, Frame) for i in items):
        frames: list[Frame] = items  # type: ignore[assignment]
        signature = frames[0].signature
        if all(f.signature == signature for f in frames[1:]):
            return Frame.concat(frames).to_arrow()
    return pa.concat_tables([as_table(i) for i in items])


def _to_arrow(column: np.ndarray) -> pa.Array:
    if column.ndim == 1:
        return numpy_to_arrow(column) if column.dtype.kind != "b" else pa.array(column)
    if column.dtype.kind == "b":
        return pa.FixedSizeListArray.from_arrays(pa.array(column.reshape(-1)), column.shape[1])
    return matrix_to_column(column)


def _from_arrow(field: pa.Field, column: pa.ChunkedArray) -> np.ndarray | None:
    if field.metadata or not field.nullable or column.null_count or column.num_chunks != 1:
        return None
    type_ = field.type
    array = column.chunk(0)
    if _plain(type_):
        return array.to_numpy(zero_copy_only=False)
    if pa.types.is_fixed_size_list(type_) and _plain(type_.value_type) and type_.list_size > 0:
        child = type_.value_field
        values = array.values
        if child.name != "item" or not child.nullable or child.metadata or values.null_count:
            return None
        width = type_.list_size
        flat = values.slice(array.offset * width, len(array) * width).to_numpy(zero_copy_only=False)
        return flat.reshape(len(array), width)
    return None


def _plain(type_: pa.DataType) -> bool:
    return bool(
        pa.types.is_boolean(type_)
        or (pa.types.is_integer(type_))
        or (pa.types.is_floating(type_) and not pa.types.is_float16(type_))
    )


def frame_column_ok(values: np.ndarray) -> bool:
    """True for arrays a Frame may hold: 1-D or 2-D (k > 0), of bools, integers or floats (not float16)."""
    return (
        values.dtype.kind in _KINDS
        and values.dtype != np.float16
        and (values.ndim == 1 or (values.ndim == 2 and values.shape[1] > 0))
        and values.dtype.isnative
    )
