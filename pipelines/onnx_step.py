"""An ONNX model as a pipeline step: Arrow table in, Arrow table out, onnxruntime in between."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnxruntime as ort
import pyarrow as pa
import pyarrow.compute as pc

from pipelines.errors import InvalidInput
from pipelines.frame import Frame, frame_column_ok

log = logging.getLogger(__name__)

_ORT_TO_NUMPY: dict[str, Any] = {
    "tensor(float)": np.float32,
    "tensor(double)": np.float64,
    "tensor(float16)": np.float16,
    "tensor(int64)": np.int64,
    "tensor(int32)": np.int32,
    "tensor(int16)": np.int16,
    "tensor(int8)": np.int8,
    "tensor(uint8)": np.uint8,
    "tensor(bool)": np.bool_,
    "tensor(string)": np.object_,
}


@dataclass(frozen=True)
class _Input:
    name: str
    dtype: Any
    rank: int
    width: int | None  # the fixed second dimension of a 2-D input, if the graph states it


def choose_providers(num_gpus: float) -> list[str]:
    """CUDA when the step asked for a GPU and onnxruntime offers it; CPU otherwise (with a warning)."""
    available = ort.get_available_providers()
    if num_gpus > 0:
        if "CUDAExecutionProvider" in available:
            return ["CUDAExecutionProvider", "CPUExecutionProvider"]
        log.warning(
            "step asked for num_gpus=%s but onnxruntime offers only %s: running on CPU. Install "
            "onnxruntime-gpu on GPU nodes (and not onnxruntime) to use the GPU.",
            num_gpus,
            available,
        )
    return ["CPUExecutionProvider"]


class OnnxModelStep:
    """Runs an ONNX model on the columns of a table.

    Each ONNX input is fed from the column of the same name. A single 2-D input takes `columns`
    (in order), else a lone fixed-size-list column of the right width (a V2 tensor passes
    straight through), else all numeric columns in order. Outputs become columns named after the
    ONNX outputs; a 2-D output is a fixed-size-list column, an [N, 1] output a plain column.
    """

    def __init__(
        self,
        model: bytes,
        *,
        name: str = "model",
        columns: list[str] | None = None,
        allow_nan: bool = False,
        num_threads: int = 1,
        num_gpus: float = 0,
    ) -> None:
        options = ort.SessionOptions()
        options.intra_op_num_threads = max(1, num_threads)
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.providers = choose_providers(num_gpus)
        # On CPU a run is pure computation: small tables may run on the event loop (serving.segments).
        self.non_blocking = self.providers == ["CPUExecutionProvider"]
        self.session = ort.InferenceSession(model, sess_options=options, providers=self.providers)
        self.name = name
        self.columns = columns
        self.allow_nan = allow_nan
        self.inputs = [
            _Input(
                i.name,
                _ORT_TO_NUMPY.get(i.type, np.float32),
                len(i.shape),
                i.shape[1] if len(i.shape) == 2 and isinstance(i.shape[1], int) else None,
            )
            for i in self.session.get_inputs()
        ]
        self.output_names = [o.name for o in self.session.get_outputs()]
        self._column_indices: dict[tuple[str, ...], list[int]] = {}  # `columns` in frames of these names
        if columns is not None and not (len(self.inputs) == 1 and self.inputs[0].rank == 2):
            raise InvalidInput(
                f"step {name!r} has 'columns' but its model does not take a single 2-D input "
                f"(inputs: {[i.name for i in self.inputs]}); remove 'columns'"
            )
        if columns is not None and self.inputs[0].width not in (None, len(columns)):
            raise InvalidInput(
                f"step {name!r} names {len(columns)} columns but the model takes "
                f"{self.inputs[0].width} features: list exactly {self.inputs[0].width} columns"
            )

    def warm_up(self) -> None:
        """Run one dummy row so the first real request does not pay graph initialisation."""
        feeds: dict[str, np.ndarray] = {}
        for spec in self.inputs:
            if spec.dtype is np.object_:
                return
            width = spec.width or (len(self.columns) if self.columns else None)
            if spec.rank == 2 and width is None:
                return  # unknown width: nothing sensible to feed
            shape: tuple[int, ...] = (1, width) if spec.rank == 2 and width is not None else (1,)
            feeds[spec.name] = np.zeros(shape, dtype=spec.dtype)
        self.session.run(None, feeds)

    def __call__(self, table: pa.Table) -> pa.Table:
        feeds = {spec.name: self._feed(spec, table) for spec in self.inputs}
        try:
            results = self.session.run(self.output_names, feeds)
        except Exception as exc:  # onnxruntime raises its own types for shape/type mismatches
            raise InvalidInput(f"model step {self.name!r} rejected the input: {exc}") from exc
        return pa.table({name: _to_column(value) for name, value in zip(self.output_names, results, strict=True)})

    def on_frame(self, frame: Frame) -> Frame | pa.Table | None:
        """The fast path: feeds straight from the frame's arrays. None (before anything ran) when the
        table path must decide; a table when the model's outputs are not plain numbers."""
        feeds = {}
        for spec in self.inputs:
            array = self._frame_feed(spec, frame)
            if array is None:
                return None
            feeds[spec.name] = array
        try:
            results = self.session.run(self.output_names, feeds)
        except Exception as exc:
            raise InvalidInput(f"model step {self.name!r} rejected the input: {exc}") from exc
        columns = [_output_array(value) for value in results]
        lengths = {len(c) for c in columns if c is not None}
        if any(c is None for c in columns) or len(lengths) != 1:  # the table path builds (or refuses) such outputs
            return pa.table({n: _to_column(v) for n, v in zip(self.output_names, results, strict=True)})
        return Frame(tuple(self.output_names), tuple(columns), lengths.pop())  # type: ignore[arg-type]

    def _frame_feed(self, spec: _Input, frame: Frame) -> np.ndarray | None:
        """What `_feed` gives for this input, from a frame; None where the table path must decide
        (a missing column, a shape the model does not take, NaN without allow_nan)."""
        if spec.dtype is np.object_:
            return None
        index = frame.index(spec.name)
        if index >= 0 and not (self.columns and spec.rank == 2):
            values = frame.columns[index]
            if values.ndim == 2:
                if spec.rank != 2 or (spec.width is not None and values.shape[1] != spec.width):
                    return None
                array = np.asarray(values, dtype=spec.dtype)
            else:
                array = np.asarray(values, dtype=spec.dtype)
                if spec.rank == 2:
                    array = array.reshape(-1, 1)
        elif spec.rank == 2 and len(self.inputs) == 1:
            if self.columns is not None:
                indices = self._column_indices.get(frame.names)
                if indices is None:
                    indices = [frame.index(c) for c in self.columns]
                    if len(self._column_indices) < 16:
                        self._column_indices[frame.names] = indices
            elif len(frame.names) == 1 and frame.columns[0].ndim == 2:
                return self._frame_feed(_Input(frame.names[0], spec.dtype, 2, spec.width), frame)
            else:
                indices = list(range(len(frame.names)))
            if min(indices, default=-1) < 0 or any(frame.columns[i].ndim != 1 for i in indices):
                return None
            if spec.width is not None and len(indices) != spec.width:
                return None
            array = np.empty((frame.num_rows, len(indices)), dtype=spec.dtype)
            for j, i in enumerate(indices):
                array[:, j] = frame.columns[i]
        else:
            return None
        if not self.allow_nan and array.dtype.kind == "f" and np.isnan(array).any():
            return None
        return array

    def _feed(self, spec: _Input, table: pa.Table) -> np.ndarray:
        names = table.column_names
        if spec.name in names and not (self.columns and spec.rank == 2):
            array = _column_to_numpy(table.column(spec.name), spec, self.name)
        elif spec.rank == 2 and len(self.inputs) == 1:
            array = self._matrix(spec, table)
        else:
            raise InvalidInput(
                f"model step {self.name!r} needs a column {spec.name!r}; the input has {names}. "
                "Rename a column to the model's input name or add a Select/Rename step"
            )
        if not self.allow_nan and array.dtype.kind == "f" and np.isnan(array).any():
            rows = np.unique(np.argwhere(np.isnan(array))[:, 0])[:5].tolist()
            raise InvalidInput(
                f"model step {self.name!r}: input has NaN or null values (rows {rows}); send numbers, add "
                "a FillNA step before the model, or set config allow_nan: true on the step"
            )
        return array

    def _matrix(self, spec: _Input, table: pa.Table) -> np.ndarray:
        if self.columns is not None:
            present = set(table.column_names)
            missing = [c for c in self.columns if c not in present]
            if missing:
                raise InvalidInput(
                    f"model step {self.name!r} needs columns {missing}, missing from the input "
                    f"(it has {table.column_names}); send them or fix the step's 'columns'"
                )
            chosen = self.columns
        else:
            lists = [f.name for f in table.schema if pa.types.is_fixed_size_list(f.type)]
            if len(lists) == 1 and table.num_columns == 1:
                return _column_to_numpy(table.column(lists[0]), spec, self.name)
            chosen = [
                f.name
                for f in table.schema
                if pa.types.is_integer(f.type) or pa.types.is_floating(f.type) or pa.types.is_boolean(f.type)
            ]
        if spec.width is not None and len(chosen) != spec.width:
            raise InvalidInput(
                f"model step {self.name!r} takes {spec.width} features but got {len(chosen)} numeric "
                f"columns {chosen}; send exactly the model's features or name them in 'columns'"
            )
        out = np.empty((table.num_rows, len(chosen)), dtype=spec.dtype)
        for j, name in enumerate(chosen):
            column = table.column(name)
            if column.null_count == 0 and column.num_chunks == 1 and _is_number(column.type):
                out[:, j] = column.chunk(0).to_numpy(zero_copy_only=False)  # the common case, kept cheap
            else:
                out[:, j] = _column_to_numpy(column, _Input(name, spec.dtype, 1, None), self.name)
        return out


def _is_number(arrow_type: pa.DataType) -> bool:
    return bool(pa.types.is_floating(arrow_type) or pa.types.is_integer(arrow_type))


def _column_to_numpy(column: pa.ChunkedArray, spec: _Input, step: str) -> np.ndarray:
    arrow_type = column.type
    if pa.types.is_fixed_size_list(arrow_type):
        width = arrow_type.list_size
        if spec.rank != 2:
            raise InvalidInput(
                f"model step {step!r}: column {spec.name!r} holds vectors of {width} but the model "
                f"input is {spec.rank}-D; send one value per row"
            )
        if spec.width is not None and width != spec.width:
            raise InvalidInput(
                f"model step {step!r}: input {spec.name!r} has {width} features per row, the model "
                f"takes {spec.width}; send rows of {spec.width} values"
            )
        flat = pc.list_flatten(column)
        values = _numeric(flat, spec, step)
        return values.reshape(-1, width)
    if pa.types.is_list(arrow_type) or pa.types.is_large_list(arrow_type):
        raise InvalidInput(
            f"model step {step!r}: column {spec.name!r} holds lists of varying length; send rows of equal width"
        )
    values = _numeric(column, spec, step)
    return values.reshape(-1, 1) if spec.rank == 2 else values


def _numeric(column: pa.ChunkedArray | pa.Array, spec: _Input, step: str) -> np.ndarray:
    if spec.dtype is np.object_:
        return np.asarray(column.to_pylist(), dtype=object)
    arrow_type = column.type
    if not (
        pa.types.is_integer(arrow_type) or pa.types.is_floating(arrow_type) or pa.types.is_boolean(arrow_type)
    ):
        raise InvalidInput(
            f"model step {step!r}: column {spec.name!r} has type {arrow_type}, the model needs numbers "
            f"({np.dtype(spec.dtype).name}); send numeric values or add a Cast step"
        )
    if column.null_count:
        column = (
            pc.fill_null(column, float("nan"))
            if pa.types.is_floating(arrow_type)
            else column.cast(pa.float64())
        )
        column = pc.fill_null(column, float("nan"))
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    return np.asarray(column.to_numpy(zero_copy_only=False), dtype=spec.dtype)


def _output_array(value: Any) -> np.ndarray | None:
    """A model output as a frame column (what `_to_column` would make of it), or None."""
    if not isinstance(value, np.ndarray):
        return None
    array = value[:, 0] if value.ndim == 2 and value.shape[1] == 1 else value
    if array.ndim > 2:
        array = array.reshape(array.shape[0], -1)
    return array if frame_column_ok(array) else None


def _to_column(value: Any) -> pa.Array:
    array = np.asarray(value)
    if array.ndim == 2 and array.shape[1] == 1:
        array = array[:, 0]
    if array.ndim == 1:
        return pa.array(array)
    rows = array.shape[0]
    width = int(np.prod(array.shape[1:]))
    flat = pa.array(np.ascontiguousarray(array).reshape(rows * width))
    return pa.FixedSizeListArray.from_arrays(flat, width)
