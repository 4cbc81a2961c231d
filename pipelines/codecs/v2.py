"""Open Inference Protocol (KServe V2) JSON, with Triton's binary tensor extension both ways.

Each input tensor becomes one table column: [N] or [N, 1] a plain column, [N, k] a
`fixed_size_list<k>` column, rank >= 3 a fixed-size list of prod(shape[1:]) items that keeps its
full shape in the field metadata (see pipelines.tensors). Replies map columns back the same way.
"""

from __future__ import annotations

import functools
import math
import struct
from collections.abc import Callable
from typing import Any

import numpy as np
import orjson
import pyarrow as pa

from pipelines.codecs.base import JSON_OPTIONS, Decoded, WireFormat, json_default
from pipelines.errors import BadPayload, InvalidInput
from pipelines.frame import Data, Frame, as_table, frame_column_ok, frame_of
from pipelines.tensors import (
    as_array,
    equal_list_width,
    fixed_list_matrix,
    list_values,
    shape_metadata,
    stored_shape,
    to_fixed_list,
)

HEADER_LENGTH = "inference-header-content-length"

# Little-endian on the wire, whatever the host.
NUMPY_TYPES: dict[str, np.dtype[Any]] = {
    "BOOL": np.dtype(np.bool_),
    "UINT8": np.dtype("<u1"),
    "UINT16": np.dtype("<u2"),
    "UINT32": np.dtype("<u4"),
    "UINT64": np.dtype("<u8"),
    "INT8": np.dtype("<i1"),
    "INT16": np.dtype("<i2"),
    "INT32": np.dtype("<i4"),
    "INT64": np.dtype("<i8"),
    "FP16": np.dtype("<f2"),
    "FP32": np.dtype("<f4"),
    "FP64": np.dtype("<f8"),
}
ARROW_TYPES: dict[str, pa.DataType] = {
    name: pa.from_numpy_dtype(dtype.newbyteorder("=")) for name, dtype in NUMPY_TYPES.items()
} | {"BYTES": pa.string()}
_FROM_ARROW: dict[pa.DataType, str] = {t: name for name, t in ARROW_TYPES.items()} | {
    pa.large_string(): "BYTES",
    pa.binary(): "BYTES",
    pa.large_binary(): "BYTES",
}
_SUPPORTED = ", ".join(ARROW_TYPES)
_KIND_NAMES = {"b": "true/false", "U": "strings", "S": "strings", "O": "nulls or mixed values"}


def v2_datatype(arrow_type: pa.DataType) -> str:
    """The V2 datatype of an Arrow type; a list type gives its items' datatype."""
    if pa.types.is_dictionary(arrow_type):
        arrow_type = arrow_type.value_type
    if pa.types.is_fixed_size_list(arrow_type) or pa.types.is_list(arrow_type) or pa.types.is_large_list(arrow_type):
        arrow_type = arrow_type.value_type
    found = _FROM_ARROW.get(arrow_type)
    if found is None:
        raise InvalidInput(
            f"Arrow type {arrow_type} has no V2 datatype; cast the column to numbers or strings (Cast "
            "step), or ask for Arrow or pandas-records output"
        )
    return found


# ---------------------------------------------------------------- decode


def decode_v2(body: bytes, header_length: str | None, *, frames: bool = False) -> Decoded:
    """Decode a V2 request; `header_length` is the binary extension's header, if sent. With
    `frames`, numeric tensors of rank 1 or 2 come as a Frame (pipelines.frame), the decoded arrays as they are."""
    view = memoryview(body)
    if header_length is None:
        head, tail = view, view[:0]
    else:
        size = _header_size(header_length, len(body))
        head, tail = view[:size], view[size:]
    try:
        request = orjson.loads(head)
    except orjson.JSONDecodeError as exc:
        raise BadPayload(
            f"the body is not valid JSON ({exc}); send a V2 inference request "
            '{"inputs": [{"name", "shape", "datatype", "data"}]}'
        ) from None
    if not isinstance(request, dict):
        raise InvalidInput(
            f"a V2 request must be a JSON object with 'inputs', not a {_json_kind(request)}; for a list of "
            "records send Content-Type: application/json; format=pandas-records"
        )
    inputs = request.get("inputs")
    if not isinstance(inputs, list) or not inputs:
        raise InvalidInput(
            "the V2 request has no 'inputs'; send "
            '{"inputs": [{"name": ..., "shape": [...], "datatype": "FP32", "data": [...]}]}'
        )
    request_id = request.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise InvalidInput(f"the request 'id' must be a string, got {request_id!r}")
    parameters = request.get("parameters")
    if parameters is None:
        parameters = {}
    elif not isinstance(parameters, dict):
        raise InvalidInput(f"the request 'parameters' must be an object, got {_json_kind(parameters)}")
    requested, binary = _outputs(request.get("outputs"))
    binary = binary or parameters.get("binary_data_output") is True
    data = _inputs_table(inputs, tail, header_length is not None, frames)
    return Decoded(data, WireFormat.V2, request_id, binary, requested, parameters)


def _header_size(header_length: str, body_size: int) -> int:
    try:
        size = int(header_length)
    except ValueError:
        size = -1
    if not 0 < size <= body_size:
        raise BadPayload(
            f"Inference-Header-Content-Length is {header_length!r} but the body has {body_size} bytes; "
            "send the byte length of the JSON header that starts the body"
        )
    return size


def _outputs(outputs: Any) -> tuple[tuple[str, ...] | None, bool]:
    if outputs is None:
        return None, False
    if not isinstance(outputs, list):
        raise InvalidInput(f"'outputs' must be a list of {{\"name\": ...}}, got {_json_kind(outputs)}")
    names: dict[str, None] = {}
    binary = False
    for i, output in enumerate(outputs):
        name = output.get("name") if isinstance(output, dict) else None
        if not isinstance(name, str):
            raise InvalidInput(f"outputs[{i}] must be an object with a string 'name', got {output!r}")
        names[name] = None
        params = output.get("parameters")
        if isinstance(params, dict) and params.get("binary_data") is True:
            binary = True
    return (tuple(names) or None), binary


def _inputs_table(inputs: list[Any], tail: memoryview, has_binary: bool, frames: bool) -> pa.Table | Frame:
    decoded: list[tuple[np.ndarray | pa.Array, str, list[int]]] = []
    arrays: list[pa.Array] = []
    names: list[str] = []
    metadata_by_name: dict[str, dict[bytes, bytes]] = {}
    first: tuple[str, int] | None = None  # (name, rows) of the first input, to compare batch sizes
    cursor = 0
    for i, spec in enumerate(inputs):
        name, shape, datatype = _input_header(i, spec)
        where = f"input {name!r}"
        count = math.prod(shape)
        params = spec.get("parameters")
        size = params.get("binary_data_size") if isinstance(params, dict) else None
        if size is not None:
            if not has_binary:
                raise BadPayload(
                    f"{where} has binary_data_size but the request has no Inference-Header-Content-Length "
                    "header; send that header with the JSON header's byte length"
                )
            if not isinstance(size, int) or isinstance(size, bool) or size < 0:
                raise BadPayload(f"{where}: binary_data_size must be a byte count, got {size!r}")
            chunk = tail[cursor : cursor + size]
            if len(chunk) < size:
                raise BadPayload(
                    f"{where} declares {size} bytes of binary data but only {len(chunk)} remain in the body; "
                    "the body is truncated or binary_data_size is wrong"
                )
            cursor += size
            values = _binary_values(chunk, datatype, count, where)
        elif "data" in spec:
            values = _json_values(spec["data"], datatype, count, shape, where)
        else:
            raise InvalidInput(f"{where} has no 'data'; send its values in 'data' (flat or nested lists)")
        if first is None:
            first = (name, shape[0])
        elif shape[0] != first[1]:
            raise InvalidInput(
                f"inputs have different first dimensions (batch sizes): {first[0]!r} has {first[1]} rows, "
                f"{name!r} has {shape[0]}; send the same number of rows for every input"
            )
        decoded.append((values, datatype, shape))
        names.append(name)
    if cursor != len(tail):
        raise BadPayload(
            f"{len(tail) - cursor} bytes follow the binary tensors; binary_data_size values must add up "
            "to the bytes after the JSON header"
        )
    if len(names) > 1 and len(set(names)) != len(names):
        raise InvalidInput("two inputs have the same name; give every input tensor its own name")
    frame = _frame(names, decoded) if frames else None
    if frame is not None:
        return frame
    for name, (values, datatype, shape) in zip(names, decoded, strict=True):
        array, metadata = _column(values, datatype, shape)
        arrays.append(array)
        if metadata is not None:
            metadata_by_name[name] = metadata
    if not metadata_by_name:
        return pa.Table.from_arrays(arrays, names=names)
    fields = [
        pa.field(name, array.type, metadata=metadata_by_name.get(name))
        for name, array in zip(names, arrays, strict=True)
    ]
    return pa.Table.from_arrays(arrays, schema=pa.schema(fields))


def _frame(names: list[str], decoded: list[tuple[np.ndarray | pa.Array, str, list[int]]]) -> Frame | None:
    """The tensors as frame columns ([N] and [N, 1] plain, [N, k] 2-D), or None for strings, FP16
    and rank >= 3 (whose shape travels in field metadata): those take the table path."""
    columns = []
    for values, datatype, shape in decoded:
        if not isinstance(values, np.ndarray) or datatype in ("FP16", "BYTES") or len(shape) > 2:
            return None
        column = values if len(shape) == 1 or shape[1] == 1 else values.reshape(shape[0], shape[1])
        if not frame_column_ok(column):
            return None
        columns.append(column)
    return Frame(tuple(names), tuple(columns), decoded[0][2][0])


def _input_header(i: int, spec: Any) -> tuple[str, list[int], str]:
    if not isinstance(spec, dict):
        raise InvalidInput(f"inputs[{i}] must be an object with name, shape, datatype and data")
    name, shape, datatype = spec.get("name"), spec.get("shape"), spec.get("datatype")
    if not isinstance(name, str) or not name:
        raise InvalidInput(f"inputs[{i}] has no 'name'; name every input tensor")
    if (
        not isinstance(shape, list)
        or not shape
        or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape)
    ):
        raise InvalidInput(
            f"input {name!r} has shape {shape!r}; send a list of non-negative integers, batch size first, e.g. [1, 4]"
        )
    if datatype not in ARROW_TYPES:
        raise InvalidInput(f"input {name!r} has unknown datatype {datatype!r}; use one of {_SUPPORTED}")
    if 0 in shape:
        raise InvalidInput(f"input {name!r} has shape {shape}, which holds no values; send at least one row")
    return name, shape, datatype


def _json_values(data: Any, datatype: str, count: int, shape: list[int], where: str) -> np.ndarray | pa.Array:
    if datatype == "BYTES":
        return _json_strings(data, count, shape, where)
    if not isinstance(data, list):
        raise InvalidInput(f"{where}: 'data' must be a list of {datatype} values, got {_json_kind(data)}")
    try:
        values = np.asarray(data)
    except ValueError:
        raise InvalidInput(
            f"{where}: 'data' is nested lists of unequal lengths; send a flat list or equal-length rows"
        ) from None
    if values.size != count:
        raise InvalidInput(
            f"{where} has shape {shape} ({count} values) but 'data' holds {values.size}; send exactly "
            "prod(shape) values, flat or nested"
        )
    target = NUMPY_TYPES[datatype]
    kind = values.dtype.kind
    if datatype.startswith("FP"):
        if kind == "O" and _nulls_and_numbers(values):
            values = values.astype(np.float64)  # null (how replies write NaN) reads back as NaN
        elif kind not in "fiu":
            raise _wrong_kind(where, datatype, kind, "numbers")
    elif datatype == "BOOL":
        if kind != "b":
            raise _wrong_kind(where, datatype, kind, "true/false")
    else:
        values = _integers(values, target, datatype, where)
    return values.astype(target, copy=False).reshape(-1)


def _wrong_kind(where: str, datatype: str, kind: str, want: str) -> InvalidInput:
    return InvalidInput(f"{where} is {datatype} but 'data' holds {_KIND_NAMES.get(kind, 'numbers')}; send {want}")


def _nulls_and_numbers(values: np.ndarray) -> bool:
    return all(v is None or (isinstance(v, int | float) and not isinstance(v, bool)) for v in values.flat)


def _integers(values: np.ndarray, target: np.dtype[Any], datatype: str, where: str) -> np.ndarray:
    kind = values.dtype.kind
    if kind == "f":
        if not (np.isfinite(values).all() and (values == np.trunc(values)).all()):
            raise InvalidInput(f"{where} is {datatype} but 'data' holds non-integer numbers; send integers")
    elif kind not in "iu":
        raise _wrong_kind(where, datatype, kind, "integers")
    if values.dtype != target and values.size:
        info = np.iinfo(target)
        low, high = values.min(), values.max()
        if low < info.min or high > info.max:
            raise InvalidInput(
                f"{where}: value {low if low < info.min else high} does not fit {datatype} "
                f"({info.min}..{info.max}); send a wider datatype"
            )
    return values


def _json_strings(data: Any, count: int, shape: list[int], where: str) -> pa.Array:
    flat = data if isinstance(data, list) and all(type(v) is str for v in data) else _flatten(data)
    if len(flat) != count:
        raise InvalidInput(
            f"{where} has shape {shape} ({count} values) but 'data' holds {len(flat)}; send exactly "
            "prod(shape) strings, flat or nested"
        )
    try:
        return pa.array(flat, type=pa.string())
    except (pa.ArrowTypeError, pa.ArrowInvalid):
        raise InvalidInput(f"{where} is BYTES but 'data' holds non-strings; send a list of strings") from None


def _flatten(data: Any) -> list[Any]:
    if not isinstance(data, list):
        return [data]
    flat: list[Any] = []
    for item in data:
        flat.extend(_flatten(item) if isinstance(item, list) else [item])
    return flat


def _binary_values(chunk: memoryview, datatype: str, count: int, where: str) -> np.ndarray | pa.Array:
    if datatype == "BYTES":
        return _binary_strings(chunk, count, where)
    dtype = NUMPY_TYPES[datatype]
    if len(chunk) != count * dtype.itemsize:
        raise BadPayload(
            f"{where}: binary_data_size is {len(chunk)} bytes but {count} {datatype} values take "
            f"{count * dtype.itemsize}; send shape and binary data that agree"
        )
    return np.frombuffer(chunk, dtype=dtype)


def _binary_strings(chunk: memoryview, count: int, where: str) -> pa.Array:
    items: list[bytes] = []
    pos, end = 0, len(chunk)
    while pos < end:
        if pos + 4 > end:
            raise BadPayload(f"{where}: BYTES data ends inside an element length; the body is truncated")
        (size,) = struct.unpack_from("<I", chunk, pos)
        pos += 4
        if pos + size > end:
            raise BadPayload(f"{where}: a BYTES element of {size} bytes runs past binary_data_size")
        items.append(bytes(chunk[pos : pos + size]))
        pos += size
    if len(items) != count:
        raise BadPayload(
            f"{where}: binary data holds {len(items)} BYTES elements but the shape needs {count}; "
            "send shape and binary data that agree"
        )
    array = pa.array(items, type=pa.binary())
    try:
        return array.cast(pa.string())  # text as text; raw bytes (not UTF-8) stay binary
    except pa.ArrowInvalid:
        return array


def _column(
    values: np.ndarray | pa.Array, datatype: str, shape: list[int]
) -> tuple[pa.Array, dict[bytes, bytes] | None]:
    if isinstance(values, pa.Array):
        flat = values
    elif datatype == "BOOL":
        flat = pa.array(values)
    else:  # wrap the numpy buffer: no copy, no type inference
        flat = pa.Array.from_buffers(ARROW_TYPES[datatype], len(values), [None, pa.py_buffer(values)])
    if len(shape) == 1 or (len(shape) == 2 and shape[1] == 1):
        return flat, None
    column = pa.FixedSizeListArray.from_arrays(flat, len(flat) // shape[0])
    return column, shape_metadata(shape) if len(shape) >= 3 else None


def _json_kind(value: Any) -> str:
    return {dict: "object", list: "list", str: "string", bool: "boolean"}.get(type(value), "number")


# ---------------------------------------------------------------- encode


def encode_v2(
    result: Data, decoded: Decoded, *, model_name: str, model_version: str, parameters: dict[str, Any]
) -> tuple[bytes, dict[str, str]]:
    """The V2 reply: JSON, or the binary extension when the request asked for it."""
    columns = _output_tensors(result)
    if decoded.requested_outputs is not None:
        by_name = dict(columns)
        unknown = [n for n in decoded.requested_outputs if n not in by_name]
        if unknown:
            raise InvalidInput(
                f"requested outputs {unknown} do not exist; this pipeline returns {list(by_name)}. Ask for those "
                "names or leave 'outputs' out to get all of them"
            )
        columns = [(name, by_name[name]) for name in decoded.requested_outputs]
    outputs: list[dict[str, Any]] = []
    raw: list[bytes] = []
    for name, tensor in columns:
        datatype, shape, data = tensor()
        if decoded.binary_output:
            blob = _raw_bytes(data, datatype, name)
            raw.append(blob)
            outputs.append(
                {"name": name, "datatype": datatype, "shape": shape, "parameters": {"binary_data_size": len(blob)}}
            )
        else:
            outputs.append({"name": name, "datatype": datatype, "shape": shape, "data": data})
    reply: dict[str, Any] = {"model_name": model_name, "model_version": model_version}
    if decoded.request_id is not None:
        reply["id"] = decoded.request_id
    reply["parameters"] = parameters
    reply["outputs"] = outputs
    header = orjson.dumps(reply, default=json_default, option=JSON_OPTIONS)
    if not decoded.binary_output:
        return header, {"content-type": "application/json"}
    return b"".join([header, *raw]), {
        "content-type": "application/octet-stream",
        HEADER_LENGTH: str(len(header)),
    }


Tensor = tuple[str, list[int], Any]  # (datatype, shape, flat row-major data as numpy or a list)


def _output_tensors(result: Data) -> list[tuple[str, Callable[[], Tensor]]]:
    """Each output column's name and how to make its tensor (made only for the outputs asked for)."""
    frame = frame_of(result)
    if frame is not None:  # numbers without nulls, whichever path made them: one encoder
        return [
            (name, functools.partial(_frame_tensor, column, frame.num_rows))
            for name, column in zip(frame.names, frame.columns, strict=True)
        ]
    table = as_table(result)
    return [
        (field.name, functools.partial(_tensor, field, column, table.num_rows))
        for field, column in zip(table.schema, table.columns, strict=True)
    ]


def _frame_tensor(column: np.ndarray, rows: int) -> Tensor:
    """The tensor of a frame column: what `_tensor` gives for the same values as Arrow."""
    datatype = v2_datatype(pa.from_numpy_dtype(column.dtype))
    shape = [rows] if column.ndim == 1 else [rows, column.shape[1]]
    return datatype, shape, column.reshape(-1)


def _tensor(field: pa.Field, column: pa.ChunkedArray, rows: int) -> Tensor:
    """(datatype, shape, flat row-major data as numpy or a list) of one output column."""
    array = as_array(column)
    if pa.types.is_dictionary(array.type):
        array = array.dictionary_decode()
    type_ = array.type
    datatype = v2_datatype(type_)
    if pa.types.is_list(type_) or pa.types.is_large_list(type_):
        width = equal_list_width(array)
        if width is None:
            raise InvalidInput(
                f"output {field.name!r} holds lists of different lengths (or null rows); a V2 tensor must be "
                "rectangular: ask for Arrow or pandas-records output"
            )
        array = to_fixed_list(array, width)
        type_ = array.type
    if not pa.types.is_fixed_size_list(type_):
        return datatype, [rows], _data(array, datatype)
    width = type_.list_size
    stored = stored_shape(field)
    shape = [rows, *stored[1:]] if stored and math.prod(stored[1:]) == width else [rows, width]
    if not array.null_count:
        return datatype, shape, _data(list_values(array), datatype)
    if not pa.types.is_floating(type_.value_type):
        raise InvalidInput(
            f"output {field.name!r} has null rows, which a {datatype} tensor cannot hold; fill them in a "
            "step or ask for Arrow or pandas-records output"
        )
    matrix = fixed_list_matrix(array).astype(type_.value_type.to_pandas_dtype())  # null rows as NaN
    return datatype, shape, matrix.reshape(-1)


def _data(values: pa.Array, datatype: str) -> Any:
    if datatype == "BYTES":
        return values.to_pylist()
    if values.null_count and not pa.types.is_floating(values.type):
        return values.to_pylist()  # integers and bools with nulls: JSON null per missing value
    return values.to_numpy(zero_copy_only=False)  # float nulls come out as NaN, written as null


def _raw_bytes(data: Any, datatype: str, name: str) -> bytes:
    if datatype == "BYTES":
        parts: list[bytes] = []
        for item in data:
            blob = item.encode() if isinstance(item, str) else b"" if item is None else bytes(item)
            parts.append(struct.pack("<I", len(blob)))
            parts.append(blob)
        return b"".join(parts)
    if isinstance(data, list):
        raise InvalidInput(
            f"output {name!r} has null values, which a binary {datatype} tensor cannot carry; fill them "
            "(FillNA step) or ask for JSON output (binary_data: false)"
        )
    return np.ascontiguousarray(data, dtype=NUMPY_TYPES[datatype]).tobytes()
