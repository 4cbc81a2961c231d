"""pandas "records" JSON: `[{"col": value, ...}, ...]`, one object per row, both ways."""

from __future__ import annotations

from typing import Any

import numpy as np
import orjson
import pyarrow as pa

from pipelines.codecs.base import JSON_OPTIONS, Decoded, WireFormat, json_default
from pipelines.errors import BadPayload, InvalidInput
from pipelines.tensors import as_array, equal_list_width, fixed_list_matrix, to_fixed_list

CONTENT_TYPE = "application/json; format=pandas-records"


def decode_records(body: bytes) -> Decoded:
    """A list of row objects as a table; equal-length list values become fixed-size-list columns."""
    try:
        rows = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise BadPayload(f"the body is not valid JSON ({exc}); send a list of records [{{...}}]") from None
    if not isinstance(rows, list) or not rows:
        raise InvalidInput(
            "a pandas-records body must be a non-empty JSON list of objects, one per row, "
            'e.g. [{"age": 31, "amount": 12.5}]'
        )
    first = rows[0]
    if not all(isinstance(row, dict) for row in rows):
        bad = next(i for i, row in enumerate(rows) if not isinstance(row, dict))
        raise InvalidInput(f"record {bad} is not an object; send one JSON object per row")
    keys = first.keys()
    try:
        if all(row.keys() == keys for row in rows):
            table = pa.Table.from_pylist(rows)
        else:
            # from_pylist takes the columns of the first row only; keep every column, null where absent
            names = list(dict.fromkeys(k for row in rows for k in row))
            table = pa.table({k: [row.get(k) for row in rows] for k in names})
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError) as exc:
        raise InvalidInput(
            f"the records do not form a table ({exc}); give each column one type in every row "
            "(numbers, strings, booleans or equal-length lists)"
        ) from None
    return Decoded(_fixed_lists(table), WireFormat.RECORDS)


def _fixed_lists(table: pa.Table) -> pa.Table:
    """Rows of equal-length lists are tensors: make them fixed-size lists (what model steps read)."""
    for index, field in enumerate(table.schema):
        if pa.types.is_list(field.type):
            array = as_array(table.column(index))
            width = equal_list_width(array)
            if width:
                fixed = to_fixed_list(array, width)
                table = table.set_column(index, field.with_type(fixed.type), fixed)
    return table


def encode_records(table: pa.Table) -> tuple[bytes, dict[str, str]]:
    """One JSON object per row with every column; NaN as null, fixed-size lists as lists."""
    names = table.column_names
    columns = [_values(table.column(i)) for i in range(len(names))]
    rows = [dict(zip(names, values, strict=True)) for values in zip(*columns, strict=True)]
    return orjson.dumps(rows, default=json_default, option=JSON_OPTIONS), {"content-type": CONTENT_TYPE}


def _values(column: pa.ChunkedArray) -> list[Any] | np.ndarray:
    """Per-row Python values; float32 stays numpy so orjson writes 0.1, not 0.10000000149011612."""
    type_ = column.type
    if pa.types.is_floating(type_):
        values = as_array(column).to_numpy(zero_copy_only=False)  # nulls as NaN, written as null
        return values if type_ != pa.float64() else values.tolist()
    floats = pa.types.is_fixed_size_list(type_) and pa.types.is_floating(type_.value_type)
    if floats and not column.null_count:
        matrix = fixed_list_matrix(column)
        return list(matrix) if type_.value_type != pa.float64() else matrix.tolist()
    if (pa.types.is_integer(type_) or pa.types.is_boolean(type_)) and not column.null_count:
        return as_array(column).to_numpy(zero_copy_only=False).tolist()  # type: ignore[no-any-return]
    return column.to_pylist()  # type: ignore[no-any-return]
