"""Tensor columns: fixed-size-list Arrow columns <-> 2-D numpy matrices, shared by steps and codecs.

A tensor of shape [N, k] travels as a `fixed_size_list<k>` column of N rows; a rank >= 3 tensor is
flattened to `prod(shape[1:])` items per row and keeps its full shape as JSON in the field metadata
under SHAPE_KEY.
"""

from __future__ import annotations

from typing import TypeAlias

import numpy as np
import orjson
import pyarrow as pa

SHAPE_KEY = b"shape"

Column: TypeAlias = pa.ChunkedArray | pa.Array


def as_array(column: Column) -> pa.Array:
    """One contiguous Array (steps and codecs work chunk-free; single-chunk columns cost nothing)."""
    if isinstance(column, pa.ChunkedArray):
        return column.chunk(0) if column.num_chunks == 1 else column.combine_chunks()
    return column


def list_values(column: Column) -> pa.Array:
    """The items of a fixed-size-list column, row-major, including the slots of null rows.

    `flatten()` would drop null rows and so break the [N, k] layout.
    """
    array = as_array(column)
    width = array.type.list_size
    return array.values.slice(array.offset * width, len(array) * width)


def fixed_list_matrix(column: Column) -> np.ndarray:
    """A fixed-size-list column as an [N, k] numpy matrix; null rows and null items become NaN."""
    array = as_array(column)
    width = array.type.list_size
    values = list_values(array)
    flat = values.to_numpy(zero_copy_only=False)  # nulls in integer items already promote to NaN
    matrix = flat.reshape(len(array), width)
    if array.null_count:
        # copy either way: to_numpy may share the Arrow buffer, which is read-only
        matrix = matrix.astype(np.float64) if matrix.dtype.kind != "f" else matrix.copy()
        matrix[array.is_null().to_numpy(zero_copy_only=False)] = np.nan
    return matrix


def equal_list_width(column: Column) -> int | None:
    """Width of a variable-size list column whose rows all have one length and none is null."""
    array = as_array(column)
    if array.null_count or len(array) == 0:
        return None
    offsets = array.offsets.to_numpy()
    lengths = np.diff(offsets)
    width = int(lengths[0])
    return width if bool((lengths == width).all()) else None


def to_fixed_list(column: Column, width: int) -> pa.FixedSizeListArray:
    """A variable-size list column whose rows all hold `width` items, as a fixed-size-list array."""
    array = as_array(column)
    offsets = array.offsets
    start = offsets[0].as_py()
    values = array.values.slice(start, len(array) * width)
    return pa.FixedSizeListArray.from_arrays(values, width)


def numpy_to_arrow(values: np.ndarray, mask: np.ndarray | None = None) -> pa.Array:
    """A 1-D numpy array as Arrow; wrapping a numeric buffer costs about half of pa.array."""
    if mask is None and values.dtype.kind in "iuf" and values.flags.c_contiguous and values.dtype.isnative:
        type_ = pa.from_numpy_dtype(values.dtype)
        return pa.Array.from_buffers(type_, len(values), [None, pa.py_buffer(values)])
    return pa.array(values, mask=mask)


def matrix_to_column(matrix: np.ndarray, type_: pa.DataType | None = None) -> pa.Array:
    """An [N, k] numpy matrix as a fixed-size-list array (an [N] vector stays a plain array)."""
    if type_ is not None:
        matrix = matrix.astype(type_.to_pandas_dtype(), copy=False)
    if matrix.ndim == 1:
        return numpy_to_arrow(matrix)
    rows = matrix.shape[0]
    width = int(np.prod(matrix.shape[1:]))
    flat = numpy_to_arrow(np.ascontiguousarray(matrix).reshape(rows * width))
    return pa.FixedSizeListArray.from_arrays(flat, width)


def stored_shape(field: pa.Field) -> list[int] | None:
    """The full tensor shape a codec stored in the field metadata, if any."""
    meta = field.metadata
    if not meta or SHAPE_KEY not in meta:
        return None
    try:
        shape = orjson.loads(meta[SHAPE_KEY])
    except orjson.JSONDecodeError:
        return None  # metadata written by someone else: fall back to [N, k]
    if isinstance(shape, list) and shape and all(isinstance(d, int) for d in shape):
        return shape
    return None


def shape_metadata(shape: list[int]) -> dict[bytes, bytes]:
    """Field metadata recording a rank >= 3 tensor's full shape."""
    return {SHAPE_KEY: orjson.dumps(shape)}
