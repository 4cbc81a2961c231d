"""Built-in pipeline steps (`python: pipelines.builtin:Select` ...): small, vectorised table transforms.

Each step validates its config once in `__init__` (a bad config is an InvalidInput) and then does
only Arrow/numpy work per call, because steps run on the request hot path. Numeric work goes through
numpy: one pyarrow.compute call costs more than a whole numpy pass over a small batch. The class
methods `required_columns(config)` and `output_columns(config, columns)` let spec validation check
the column flow statically.
"""

from __future__ import annotations

import functools
import math
from collections import Counter
from typing import Any, ClassVar, Generic, TypeVar

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from pipelines.errors import InvalidInput
from pipelines.frame import Frame
from pipelines.tensors import (
    as_array,
    equal_list_width,
    fixed_list_matrix,
    matrix_to_column,
    numpy_to_arrow,
)

Scalar = bool | int | float | str
_ARROW_ERRORS = (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError)
# Above this many rows a pyarrow.compute kernel beats a Python-level loop (string lookups).
_SMALL_BATCH = 256
# Column layouts a step remembers its frame plan for (clients send the same few).
_PLANS = 16


class _Config(BaseModel):
    model_config = ConfigDict(extra="forbid")


C = TypeVar("C", bound=_Config)


class _Builtin(Generic[C]):
    """Config parsing and column lookup shared by the built-in steps."""

    config_model: ClassVar[type[_Config]]
    usage: ClassVar[str]  # the config shape, quoted in error messages
    non_blocking: ClassVar[bool] = True  # pure computation: may run on the event loop (serving.segments)

    def __init__(self, config: dict[str, Any]) -> None:
        self.cfg: C = self.parse(config)  # type: ignore[assignment]

    @classmethod
    def parse(cls, config: Any) -> _Config:
        try:
            return cls.config_model.model_validate(config)
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in err['loc']) or 'config'}: {err['msg']}" for err in exc.errors()
            )
            raise InvalidInput(f"{cls.__name__} step config is invalid ({problems}); expected {cls.usage}") from None

    def column(self, table: pa.Table, name: str) -> tuple[int, pa.ChunkedArray]:
        index = table.schema.get_field_index(name)
        if index < 0:
            names = table.column_names
            why = "appears more than once" if name in names else "is missing"
            raise InvalidInput(
                f"{type(self).__name__} step: column {name!r} {why}; the input has columns {names}. "
                "Send that column or fix the step's config"
            )
        return index, table.column(index)

    def fail(self, message: str) -> InvalidInput:
        return InvalidInput(f"{type(self).__name__} step: {message}")

    @classmethod
    def required_columns(cls, config: dict[str, Any]) -> list[str]:
        return []

    @classmethod
    def output_columns(cls, config: dict[str, Any], columns: list[str] | None) -> list[str] | None:
        return columns


class _OneColumnStep(_Builtin[C]):
    """A step that reads config `column` and writes config `output` (in place when it has none)."""

    @classmethod
    def required_columns(cls, config: dict[str, Any]) -> list[str]:
        return [cls.parse(config).column]  # type: ignore[attr-defined]

    @classmethod
    def output_columns(cls, config: dict[str, Any], columns: list[str] | None) -> list[str] | None:
        cfg = cls.parse(config)
        return _added(columns, getattr(cfg, "output", None) or cfg.column)  # type: ignore[attr-defined]


def _unique(values: list[Any], what: str) -> list[Any]:
    dupes = [v for v, n in Counter(values).items() if n > 1]
    if dupes:
        raise ValueError(f"{what} {dupes} appear more than once; list each once")
    return values


def _put(table: pa.Table, name: str, values: pa.Array | pa.ChunkedArray) -> pa.Table:
    """Replace column `name` if present, else append it."""
    index = table.schema.get_field_index(name)
    field = pa.field(name, values.type)
    return table.set_column(index, field, values) if index >= 0 else table.append_column(field, values)


def _added(columns: list[str] | None, name: str) -> list[str] | None:
    return None if columns is None else columns if name in columns else [*columns, name]


def _is_list(type_: pa.DataType) -> bool:
    return bool(pa.types.is_fixed_size_list(type_) or pa.types.is_list(type_) or pa.types.is_large_list(type_))


def _numeric(type_: pa.DataType) -> bool:
    return bool(pa.types.is_integer(type_) or pa.types.is_floating(type_) or pa.types.is_boolean(type_))


def _null_mask(array: pa.Array) -> np.ndarray | None:
    return array.is_null().to_numpy(zero_copy_only=False) if array.null_count else None


def _rebuild(table: pa.Table, changes: dict[int, tuple[pa.Field, pa.Array]]) -> pa.Table:
    """Swap several columns at once: one new table instead of one per set_column."""
    if len(changes) == 1:
        [(index, (field, values))] = changes.items()
        return table.set_column(index, field, values)
    columns, fields = table.columns, list(table.schema)
    for index, (field, values) in changes.items():
        columns[index], fields[index] = values, field
    return pa.Table.from_arrays(columns, schema=pa.schema(fields, metadata=table.schema.metadata))


def _float32_columns(matrix: np.ndarray) -> list[pa.Array]:
    """Rows of a C-contiguous float32 [C, N] matrix as C arrays sharing one buffer (no copies)."""
    rows, n = matrix.shape
    buffer = pa.py_buffer(matrix)
    return [pa.Array.from_buffers(pa.float32(), n, [None, buffer], offset=i * n) for i in range(rows)]


def _column_names(columns: list[str], what: str) -> list[str]:
    return _unique(columns, what)


# ---------------------------------------------------------------- Select / Rename / Cast


class SelectConfig(_Config):
    columns: list[str] = Field(min_length=1)

    _check = field_validator("columns")(lambda v: _column_names(v, "columns"))


class Select(_Builtin[SelectConfig]):
    """Keep the listed columns, in that order."""

    config_model = SelectConfig
    usage = "{columns: [name, ...]}"

    def __call__(self, table: pa.Table) -> pa.Table:
        schema = table.schema
        indices = [schema.get_field_index(c) for c in self.cfg.columns]
        if min(indices) < 0:
            names = table.column_names
            missing = [c for c in self.cfg.columns if c not in names]
            raise self.fail(
                f"columns {missing or self.cfg.columns} are missing or repeated; the input has columns "
                f"{names}. Send them or fix 'columns'"
            )
        return table.select(indices)

    def on_frame(self, frame: Frame) -> Frame | None:
        indices = [frame.index(c) for c in self.cfg.columns]
        if min(indices) < 0:
            return None  # the table path says what is missing
        return Frame(tuple(self.cfg.columns), tuple(frame.columns[i] for i in indices), frame.num_rows)

    @classmethod
    def required_columns(cls, config: dict[str, Any]) -> list[str]:
        return list(cls.parse(config).columns)  # type: ignore[attr-defined]

    @classmethod
    def output_columns(cls, config: dict[str, Any], columns: list[str] | None) -> list[str] | None:
        return list(cls.parse(config).columns)  # type: ignore[attr-defined]


class RenameConfig(_Config):
    mapping: dict[str, str] = Field(min_length=1)

    @field_validator("mapping")
    @classmethod
    def _distinct_targets(cls, mapping: dict[str, str]) -> dict[str, str]:
        _unique(list(mapping.values()), "new names")
        return mapping


class Rename(_Builtin[RenameConfig]):
    """Rename columns: {mapping: {old: new}}."""

    config_model = RenameConfig
    usage = "{mapping: {old_name: new_name, ...}}"

    def __call__(self, table: pa.Table) -> pa.Table:
        mapping = self.cfg.mapping
        names = table.column_names
        missing = [old for old in mapping if old not in names]
        if missing:
            raise self.fail(f"columns {missing} are missing; the input has columns {names}. Send them or fix 'mapping'")
        renamed = [mapping.get(n, n) for n in names]
        if len(set(renamed)) != len(renamed):
            clash = sorted(n for n, count in Counter(renamed).items() if count > 1)
            raise self.fail(f"renaming would give two columns named {clash}; drop or rename the existing one first")
        return table.rename_columns(renamed)

    def on_frame(self, frame: Frame) -> Frame | None:
        mapping = self.cfg.mapping
        if any(frame.index(old) < 0 for old in mapping):
            return None
        renamed = tuple(mapping.get(n, n) for n in frame.names)
        if len(set(renamed)) != len(renamed):
            return None
        return Frame(renamed, frame.columns, frame.num_rows)

    @classmethod
    def required_columns(cls, config: dict[str, Any]) -> list[str]:
        return list(cls.parse(config).mapping)  # type: ignore[attr-defined]

    @classmethod
    def output_columns(cls, config: dict[str, Any], columns: list[str] | None) -> list[str] | None:
        mapping: dict[str, str] = cls.parse(config).mapping  # type: ignore[attr-defined]
        return None if columns is None else [mapping.get(c, c) for c in columns]


CAST_TYPES: dict[str, pa.DataType] = {
    "float32": pa.float32(),
    "float64": pa.float64(),
    "int32": pa.int32(),
    "int64": pa.int64(),
    "bool": pa.bool_(),
    "string": pa.string(),
}


class CastConfig(_Config):
    columns: dict[str, str] = Field(min_length=1)

    @field_validator("columns")
    @classmethod
    def _known_types(cls, columns: dict[str, str]) -> dict[str, str]:
        bad = {c: t for c, t in columns.items() if t not in CAST_TYPES}
        if bad:
            raise ValueError(f"unknown types {bad}; use one of {sorted(CAST_TYPES)}")
        return columns


class Cast(_Builtin[CastConfig]):
    """Safe-cast columns (a value that does not fit is an error, never silently truncated).

    A fixed-size-list column is cast item-wise and keeps its width and field metadata.
    """

    config_model = CastConfig
    usage = "{columns: {name: float32|float64|int32|int64|bool|string, ...}}"

    def __init__(self, config: dict[str, Any]) -> None:
        super().__init__(config)
        self.targets = [(name, t, CAST_TYPES[t]) for name, t in self.cfg.columns.items()]

    def __call__(self, table: pa.Table) -> pa.Table:
        for name, type_name, target in self.targets:
            index, column = self.column(table, name)
            source = column.type
            if pa.types.is_fixed_size_list(source):
                target = pa.list_(target, source.list_size)
            if source == target:
                continue
            try:
                cast = column.cast(target, safe=True)
            except _ARROW_ERRORS as exc:
                raise self.fail(
                    f"cannot cast column {name!r} from {source} to {type_name}: {exc}. "
                    "Send values that fit the type, or clean them first (e.g. FillNA)"
                ) from None
            table = table.set_column(index, table.schema.field(index).with_type(target), cast)
        return table

    @classmethod
    def required_columns(cls, config: dict[str, Any]) -> list[str]:
        return list(cls.parse(config).columns)  # type: ignore[attr-defined]


# ---------------------------------------------------------------- FillNA


class FillNAConfig(_Config):
    values: dict[str, Scalar] | None = Field(default=None, min_length=1)
    value: Scalar | None = None
    columns: list[str] | None = Field(default=None, min_length=1)

    @model_validator(mode="after")
    def _one_form(self) -> FillNAConfig:
        if self.values is not None and (self.value is not None or self.columns is not None):
            raise ValueError("give either 'values' or 'value' with 'columns', not both")
        if self.values is None and (self.value is None or self.columns is None):
            raise ValueError("give 'values: {column: value}' or both 'value' and 'columns'")
        return self

    def fills(self) -> dict[str, Scalar]:
        if self.values is not None:
            return dict(self.values)
        assert self.value is not None and self.columns is not None
        return dict.fromkeys(self.columns, self.value)


@functools.lru_cache(maxsize=256)
def _fill_scalar(value: Scalar, type_: pa.DataType) -> pa.Scalar:
    return pa.scalar(value).cast(type_, safe=True)


class FillNA(_Builtin[FillNAConfig]):
    """Replace nulls, and NaN in float columns (also inside fixed-size-list columns), with a value."""

    config_model = FillNAConfig
    usage = "{values: {column: value, ...}} or {value: v, columns: [name, ...]}"

    def __init__(self, config: dict[str, Any]) -> None:
        super().__init__(config)
        self.items = list(self.cfg.fills().items())

    def __call__(self, table: pa.Table) -> pa.Table:
        changes: dict[int, tuple[pa.Field, pa.Array]] = {}
        for name, value in self.items:
            index, column = self.column(table, name)
            type_ = column.type
            if pa.types.is_fixed_size_list(type_):
                filled: pa.Array | pa.ChunkedArray | None = self._fill_list(name, column, value)
            elif pa.types.is_floating(type_):
                filled = self._fill_float(name, column, value)
            elif column.null_count:
                filled = pc.fill_null(column, self._scalar(name, value, type_))
            else:
                continue
            if filled is not None:
                changes[index] = (table.schema.field(index), filled)
        return _rebuild(table, changes) if changes else table

    def _fill_float(self, name: str, column: pa.ChunkedArray, value: Scalar) -> pa.Array | None:
        scalar = self._scalar(name, value, column.type)
        values = as_array(column).to_numpy(zero_copy_only=False)  # nulls arrive as NaN
        holes = np.isnan(values)
        if not holes.any():
            return None
        return numpy_to_arrow(np.where(holes, scalar.as_py(), values).astype(values.dtype))

    def _scalar(self, name: str, value: Scalar, type_: pa.DataType) -> pa.Scalar:
        try:
            return _fill_scalar(value, type_)
        except _ARROW_ERRORS as exc:
            raise self.fail(
                f"cannot fill column {name!r} ({type_}) with {value!r}: {exc}. "
                "Use a value of the column's type, or Cast the column first"
            ) from None

    def _fill_list(self, name: str, column: pa.ChunkedArray, value: Scalar) -> pa.Array | None:
        item_type = column.type.value_type
        if not (pa.types.is_floating(item_type) or pa.types.is_integer(item_type)):
            raise self.fail(f"column {name!r} holds lists of {item_type}; FillNA fills lists of numbers only")
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self.fail(f"column {name!r} holds numbers; fill it with a number, not {value!r}")
        if pa.types.is_integer(item_type) and not float(value).is_integer():
            raise self.fail(f"column {name!r} holds integers; fill it with an integer, not {value!r}")
        matrix = fixed_list_matrix(column)
        if matrix.dtype.kind != "f":
            return None  # integer items without null rows have nothing to fill
        holes = np.isnan(matrix)
        if not holes.any():
            return None
        filled = np.where(holes, value, matrix).astype(item_type.to_pandas_dtype())
        return matrix_to_column(filled, item_type)

    @classmethod
    def required_columns(cls, config: dict[str, Any]) -> list[str]:
        return list(cls.parse(config).fills())  # type: ignore[attr-defined]


# ---------------------------------------------------------------- StandardScale


class StandardScaleConfig(_Config):
    columns: list[str] = Field(min_length=1)
    mean: list[float | list[float]]
    std: list[float | list[float]]

    _check = field_validator("columns")(lambda v: _column_names(v, "columns"))

    @model_validator(mode="after")
    def _consistent(self) -> StandardScaleConfig:
        n = len(self.columns)
        if len(self.mean) != n or len(self.std) != n:
            raise ValueError(f"{n} columns need {n} means and {n} stds, got {len(self.mean)} and {len(self.std)}")
        for name, mean, std in zip(self.columns, self.mean, self.std, strict=True):
            m, s = np.asarray(mean, dtype=np.float64), np.asarray(std, dtype=np.float64)
            if m.ndim and s.ndim and m.shape != s.shape:
                raise ValueError(f"column {name!r}: mean has {m.size} values but std has {s.size}")
            if not np.isfinite(m).all():
                raise ValueError(f"column {name!r}: mean must be finite")
            if not (np.isfinite(s).all() and (s > 0).all()):
                raise ValueError(f"column {name!r}: std must be finite and > 0, got {std}")
        return self


class StandardScale(_Builtin[StandardScaleConfig]):
    """(x - mean) / std per column, as float32 (nulls stay null); other columns pass through.

    A fixed-size-list column (a V2 tensor [N, k]) takes one number or a list of k means/stds.
    """

    config_model = StandardScaleConfig
    usage = "{columns: [name, ...], mean: [number, ...], std: [number > 0, ...]} (one mean/std per column)"

    def __init__(self, config: dict[str, Any]) -> None:
        super().__init__(config)
        self.params = [
            (name, np.asarray(m, dtype=np.float64), np.asarray(s, dtype=np.float64))
            for name, m, s in zip(self.cfg.columns, self.cfg.mean, self.cfg.std, strict=True)
        ]
        self.scalar_means = np.array([m if m.ndim == 0 else np.nan for _, m, _ in self.params])
        self.scalar_stds = np.array([s if s.ndim == 0 else np.nan for _, _, s in self.params])
        self._frame_plans: dict[tuple[str, ...], Any] = {}  # by the frame's column names

    def __call__(self, table: pa.Table) -> pa.Table:
        schema = table.schema
        changes: dict[int, tuple[pa.Field, pa.Array]] = {}
        plain: list[tuple[int, int, pa.Array]] = []  # (param position, column index, values)
        for position, (name, mean, std) in enumerate(self.params):
            index, column = self.column(table, name)
            type_ = column.type
            if pa.types.is_fixed_size_list(type_) and _numeric(type_.value_type):
                scaled = self._scale_list(name, column, mean, std)
                changes[index] = (schema.field(index).with_type(scaled.type), scaled)
            elif _numeric(type_):
                if mean.ndim or std.ndim:
                    raise self.fail(f"column {name!r} holds one value per row; give one mean and std for it")
                plain.append((position, index, as_array(column)))
            else:
                raise self.fail(f"column {name!r} has type {type_}, not numbers; send numbers or Cast it first")
        if plain:
            self._scale_plain(schema, plain, changes)
        return _rebuild(table, changes)

    def on_frame(self, frame: Frame) -> Frame | None:
        # The same numpy arithmetic as the table path, on the frame's arrays: identical float32s.
        plan = self._frame_plans.get(frame.names)
        if plan is None:
            plan = self._frame_plan(frame.names)
            if len(self._frame_plans) < _PLANS:
                self._frame_plans[frame.names] = plan
        if plan is False:
            return None  # a column is missing: the table path says which
        plain, means, stds, lists = plan
        columns = list(frame.columns)
        for index, mean, std in lists:
            values = columns[index]
            if values.ndim != 2:
                return None
            width = values.shape[1]
            if (mean.ndim and mean.size != width) or (std.ndim and std.size != width):
                return None
            columns[index] = ((values - mean) / std).astype(np.float32)
        if plain:
            flat = [columns[i].ndim == 1 for i in plain]
            if not all(flat):  # tensors with one mean/std for all items, as the table path scales them
                for i, mean, std, is_flat in zip(plain, means[:, 0], stds[:, 0], flat, strict=True):
                    if not is_flat:
                        columns[i] = ((columns[i] - mean) / std).astype(np.float32)
                plain, means, stds = [i for i, f in zip(plain, flat, strict=True) if f], means[flat], stds[flat]
            if plain:
                matrix = np.array([columns[i] for i in plain], dtype=np.float64)
                scaled = np.ascontiguousarray((matrix - means) / stds, dtype=np.float32)
                for i, values in zip(plain, scaled, strict=True):
                    columns[i] = values
        return Frame(frame.names, tuple(columns), frame.num_rows)

    def _frame_plan(self, names: tuple[str, ...]) -> Any:
        """Where each scaled column is in frames with these names: (plain column indices, their
        means and stds as [C, 1], [(index, mean, std)] of per-item lists), or False."""
        if any(name not in names for name, _, _ in self.params):
            return False
        plain = [(names.index(n), p) for p, (n, m, s) in enumerate(self.params) if not (m.ndim or s.ndim)]
        lists = [(names.index(n), m, s) for n, m, s in self.params if m.ndim or s.ndim]
        positions = [p for _, p in plain]
        # A plain column with list params is a 1-D column the plan files under lists: on_frame then
        # sees ndim 1 and leaves it to the table path, which says what is wrong.
        return (
            [i for i, _ in plain],
            self.scalar_means[positions, None],
            self.scalar_stds[positions, None],
            lists,
        )

    def _scale_plain(self, schema: pa.Schema, plain: list[tuple[int, int, pa.Array]], changes: dict[int, Any]) -> None:
        # One [C, N] numpy pass over all plain columns; nulls travel as NaN and are masked back.
        positions = [p for p, _, _ in plain]
        matrix = np.stack([a.to_numpy(zero_copy_only=False) for _, _, a in plain]).astype(np.float64)
        means, stds = self.scalar_means[positions, None], self.scalar_stds[positions, None]
        scaled = np.ascontiguousarray((matrix - means) / stds, dtype=np.float32)
        for (_, index, array), values in zip(plain, _float32_columns(scaled), strict=True):
            mask = _null_mask(array)
            if mask is not None:
                values = pa.array(values.to_numpy(zero_copy_only=False), mask=mask)
            changes[index] = (schema.field(index).with_type(pa.float32()), values)

    def _scale_list(self, name: str, column: pa.ChunkedArray, mean: np.ndarray, std: np.ndarray) -> pa.Array:
        width = column.type.list_size
        if (mean.ndim and mean.size != width) or (std.ndim and std.size != width):
            raise self.fail(
                f"column {name!r} holds {width} values per row but its mean/std list "
                f"{max(mean.size, std.size)}; give {width} values or a single number"
            )
        array = as_array(column)
        scaled = ((fixed_list_matrix(array) - mean) / std).astype(np.float32)
        result = matrix_to_column(scaled, pa.float32())
        mask = _null_mask(array)
        if mask is not None:
            result = pa.FixedSizeListArray.from_arrays(result.values, width, mask=pa.array(mask))
        return result

    @classmethod
    def required_columns(cls, config: dict[str, Any]) -> list[str]:
        return list(cls.parse(config).columns)  # type: ignore[attr-defined]


# ---------------------------------------------------------------- OneHot


class OneHotConfig(_Config):
    column: str
    categories: list[Scalar] = Field(min_length=1)
    prefix: str | None = None
    drop_original: bool = True

    _check = field_validator("categories")(lambda v: _unique(v, "categories"))

    def names(self) -> list[str]:
        prefix = self.column if self.prefix is None else self.prefix
        return [f"{prefix}_{c}" for c in self.categories]


class OneHot(_OneColumnStep[OneHotConfig]):
    """One float32 0/1 column `<prefix>_<category>` per category; unknown values give all zeros.

    The new columns take the original column's place (or follow it when `drop_original` is false).
    """

    config_model = OneHotConfig
    usage = "{column: name, categories: [value, ...], prefix?: str, drop_original?: bool}"

    def __init__(self, config: dict[str, Any]) -> None:
        super().__init__(config)
        self.names = self.cfg.names()
        if len(set(self.names)) != len(self.names):
            raise InvalidInput(
                f"OneHot step config is invalid: categories {self.cfg.categories} give duplicate column "
                f"names {self.names}; list each category once"
            )
        try:
            self.categories = pa.array(self.cfg.categories)
        except _ARROW_ERRORS:
            raise InvalidInput(
                f"OneHot step config is invalid: categories {self.cfg.categories} mix types; "
                "list categories of one type (all strings or all numbers)"
            ) from None
        self.fields = [pa.field(n, pa.float32()) for n in self.names]
        self.by_type: dict[pa.DataType, tuple[pa.Array, np.ndarray]] = {}  # categories per column type

    def _categories(self, type_: pa.DataType) -> tuple[pa.Array, np.ndarray]:
        found = self.by_type.get(type_)
        if found is None:
            value_set = self.categories.cast(type_, safe=True)
            found = self.by_type[type_] = (value_set, value_set.to_numpy(zero_copy_only=False)[:, None])
        return found

    def __call__(self, table: pa.Table) -> pa.Table:
        name = self.cfg.column
        index, column = self.column(table, name)
        type_ = column.type
        try:
            value_set, categories = self._categories(type_)
        except _ARROW_ERRORS:
            raise self.fail(
                f"column {name!r} has type {type_} but categories are {self.categories.type}; "
                "send the column as that type (Cast step) or list categories of its type"
            ) from None
        if _numeric(type_) or len(column) <= _SMALL_BATCH:
            values = as_array(column).to_numpy(zero_copy_only=False)  # nulls: NaN or None, match nothing
            one_hot = (categories == values[None, :]).astype(np.float32)
        else:
            codes = pc.fill_null(pc.index_in(column, value_set=value_set), -1).to_numpy()
            one_hot = (np.arange(len(self.names))[:, None] == codes[None, :]).astype(np.float32)
        schema = table.schema
        clash = [n for n in self.names if schema.get_field_index(n) >= 0 and n != name]
        if clash:
            raise self.fail(f"the input already has columns {clash}; rename them or set another 'prefix'")
        columns, fields = list(table.columns), list(schema)
        at = index if self.cfg.drop_original else index + 1
        drop = 1 if self.cfg.drop_original else 0
        columns[at : at + drop] = _float32_columns(one_hot)
        fields[at : at + drop] = self.fields
        return pa.Table.from_arrays(columns, schema=pa.schema(fields, metadata=schema.metadata))

    @classmethod
    def output_columns(cls, config: dict[str, Any], columns: list[str] | None) -> list[str] | None:
        cfg: OneHotConfig = cls.parse(config)  # type: ignore[assignment]
        if columns is None or cfg.column not in columns:
            return None
        at = columns.index(cfg.column)
        keep = [] if cfg.drop_original else [cfg.column]
        return [*columns[:at], *keep, *cfg.names(), *columns[at + 1 :]]


# ---------------------------------------------------------------- Threshold / Argmax / LabelMap


def _list_element(array: pa.Array, index: int) -> np.ndarray:
    """Element `index` (negative counts from the end) of each row of a variable-size list column."""
    offsets = array.offsets.to_numpy()
    lengths = np.diff(offsets)
    valid = ~array.is_null().to_numpy(zero_copy_only=False) if array.null_count else True
    ok = (lengths > index) if index >= 0 else (lengths >= -index)
    short = ~ok & valid
    if short.any():
        row = int(np.argmax(short))
        raise IndexError(f"row {row} has {int(lengths[row])} items")
    values = array.values.to_numpy(zero_copy_only=False).astype(np.float64)
    if not len(values):
        return np.full(len(array), np.nan)
    positions = offsets[:-1] + index if index >= 0 else offsets[1:] + index
    picked = values[np.clip(np.where(ok, positions, 0), 0, len(values) - 1)]
    return np.where(valid, picked, np.nan)  # type: ignore[no-any-return]


class ThresholdConfig(_Config):
    column: str
    threshold: float
    output: str = "label"
    above: int = 1
    below: int = 0
    index: int | None = None

    @field_validator("threshold")
    @classmethod
    def _finite(cls, value: float) -> float:
        if not math.isfinite(value):
            raise ValueError("threshold must be a finite number")
        return value


class Threshold(_OneColumnStep[ThresholdConfig]):
    """Add int64 column `output`: `above` where value > threshold, else `below` (null stays null).

    On a list column (e.g. class probabilities [N, 2]) it compares element `index`, by default the
    last. NaN is not above any threshold.
    """

    config_model = ThresholdConfig
    usage = (
        "{column: name, threshold: number, output?: str, above?: int, below?: int, "
        "index?: int (element of a list column; default last)}"
    )

    def __init__(self, config: dict[str, Any]) -> None:
        super().__init__(config)
        self.choices = np.array([self.cfg.below, self.cfg.above], dtype=np.int64)

    def __call__(self, table: pa.Table) -> pa.Table:
        name = self.cfg.column
        _, column = self.column(table, name)
        type_ = column.type
        array = as_array(column)
        if _is_list(type_):
            values = self._element(name, array)
        elif _numeric(type_):
            values = array.to_numpy(zero_copy_only=False)
        else:
            raise self.fail(f"column {name!r} has type {type_}, not numbers; send numbers or Cast it first")
        labels = self.choices[(values > self.cfg.threshold).astype(np.intp)]
        return _put(table, self.cfg.output, numpy_to_arrow(labels, _null_mask(array)))

    def on_frame(self, frame: Frame) -> Frame | None:
        index = frame.index(self.cfg.column)
        if index < 0:
            return None
        values = frame.columns[index]
        if values.ndim == 2:
            element = -1 if self.cfg.index is None else self.cfg.index
            if not -values.shape[1] <= element < values.shape[1]:
                return None
            values = values[:, element]
        labels = self.choices[(values > self.cfg.threshold).astype(np.intp)]
        return frame.with_columns({self.cfg.output: labels})

    def _element(self, name: str, array: pa.Array) -> np.ndarray:
        index = -1 if self.cfg.index is None else self.cfg.index
        type_ = array.type
        if not _numeric(type_.value_type):
            raise self.fail(f"column {name!r} holds lists of {type_.value_type}, not numbers")
        if pa.types.is_fixed_size_list(type_):
            width = type_.list_size
            if not -width <= index < width:
                raise self.fail(
                    f"index {index} is out of range for column {name!r} with {width} values per row; "
                    f"use 0..{width - 1} (or a negative index counting from the end)"
                )
            return fixed_list_matrix(array)[:, index]
        try:
            return _list_element(array, index)
        except IndexError as exc:
            raise self.fail(
                f"column {name!r} has no element {index} in every row ({exc}); send longer lists or fix 'index'"
            ) from None


class ArgmaxConfig(_Config):
    column: str
    output: str = "class"


class Argmax(_OneColumnStep[ArgmaxConfig]):
    """Add int64 column `output`: the index of the largest element of each list row (ties: first)."""

    config_model = ArgmaxConfig
    usage = "{column: name of a list column, output?: str}"

    def __call__(self, table: pa.Table) -> pa.Table:
        name = self.cfg.column
        _, column = self.column(table, name)
        type_ = column.type
        if not _is_list(type_):
            raise self.fail(f"column {name!r} has type {type_}; Argmax needs a list column such as a [N, k] tensor")
        if not _numeric(type_.value_type):
            raise self.fail(f"column {name!r} holds lists of {type_.value_type}, not numbers")
        array = as_array(column)
        if pa.types.is_fixed_size_list(type_):
            result = self._fixed(fixed_list_matrix(array))
        elif (width := equal_list_width(array)) is not None:
            start = array.offsets[0].as_py()
            flat = array.values.slice(start, len(array) * width).to_numpy(zero_copy_only=False)
            result = self._fixed(flat.reshape(len(array), width))
        else:
            result = self._ragged(array)
        return _put(table, self.cfg.output, numpy_to_arrow(result.astype(np.int64), _null_mask(array)))

    def on_frame(self, frame: Frame) -> Frame | None:
        index = frame.index(self.cfg.column)
        if index < 0 or frame.columns[index].ndim != 2:
            return None
        best = np.argmax(frame.columns[index], axis=1).astype(np.int64)
        return frame.with_columns({self.cfg.output: best})

    def _fixed(self, matrix: np.ndarray) -> np.ndarray:
        if matrix.shape[1] == 0:
            raise self.fail(f"column {self.cfg.column!r} holds empty lists; there is no maximum")
        return np.argmax(matrix, axis=1)

    def _ragged(self, array: pa.Array) -> np.ndarray:
        offsets = array.offsets.to_numpy()
        lengths = np.diff(offsets)
        valid = ~array.is_null().to_numpy(zero_copy_only=False)
        if (lengths[valid] == 0).any():
            raise self.fail(f"column {self.cfg.column!r} holds empty lists; there is no maximum")
        values = array.values.slice(offsets[0], offsets[-1] - offsets[0]).to_numpy(zero_copy_only=False)
        rows = np.repeat(np.arange(len(array)), lengths)
        # lexsort is stable: within a row equal maxima keep their order, so ties give the first one
        order = np.lexsort((-values.astype(np.float64), rows))
        starts = offsets[:-1] - offsets[0]
        best = np.zeros(len(array), dtype=np.int64)
        has = lengths > 0
        best[has] = order[starts[has]] - starts[has]
        return best


class LabelMapConfig(_Config):
    column: str
    labels: dict[int | str, str] | list[str] = Field(min_length=1)
    output: str | None = None


class LabelMap(_OneColumnStep[LabelMapConfig]):
    """Map class ids (ints, or their string form) to label strings; unknown ids give null."""

    config_model = LabelMapConfig
    usage = "{column: name, labels: {id: label, ...} or [label0, label1, ...], output?: str}"

    def __init__(self, config: dict[str, Any]) -> None:
        super().__init__(config)
        labels = self.cfg.labels
        pairs = list(enumerate(labels)) if isinstance(labels, list) else list(labels.items())
        # JSON/YAML object keys arrive as strings: "1" must still match the integer class id 1.
        # Float ids hash like ints in a dict (1.0 == 1), so one dict serves int and float columns.
        self.by_id: dict[Any, str] = {k: v for k, v in ((_as_int(k), v) for k, v in pairs) if k is not None}
        self.by_text: dict[Any, str] = {str(k): v for k, v in pairs}
        self.id_keys = pa.array([float(k) for k in self.by_id], type=pa.float64())
        self.id_labels = pa.array(list(self.by_id.values()), type=pa.string())
        self.text_keys = pa.array(list(self.by_text), type=pa.string())
        self.text_labels = pa.array(list(self.by_text.values()), type=pa.string())

    def __call__(self, table: pa.Table) -> pa.Table:
        name = self.cfg.column
        _, column = self.column(table, name)
        type_ = column.type
        if _numeric(type_):
            lookup, keys, labels, key_type = self.by_id, self.id_keys, self.id_labels, pa.float64()
        elif pa.types.is_string(type_) or pa.types.is_large_string(type_):
            lookup, keys, labels, key_type = self.by_text, self.text_keys, self.text_labels, pa.string()
        else:
            raise self.fail(
                f"column {name!r} has type {type_}; LabelMap maps integer or string class ids: "
                "send those or Cast the column"
            )
        if len(column) <= _SMALL_BATCH:
            ids = as_array(column).to_pylist() if key_type == pa.string() else _numbers(column)
            mapped: pa.Array = pa.array([lookup.get(i) for i in ids], type=pa.string())
        else:
            # floats: 1.0 is id 1, while 1.5 and NaN match no key
            column = column.cast(key_type) if type_ != key_type else column
            mapped = labels.take(pc.index_in(column, value_set=keys))
        return _put(table, self.cfg.output or name, mapped)


def _numbers(column: pa.ChunkedArray) -> list[Any]:
    """Python numbers of a numeric column, None for nulls (bools count as 0/1)."""
    array = as_array(column)
    if array.null_count:
        return array.to_pylist()  # type: ignore[no-any-return]
    return array.to_numpy(zero_copy_only=False).tolist()  # type: ignore[no-any-return]


def _as_int(key: int | str) -> int | None:
    if isinstance(key, int):
        return key
    try:
        return int(key)
    except ValueError:
        return None


__all__ = [
    "Argmax",
    "Cast",
    "FillNA",
    "LabelMap",
    "OneHot",
    "Rename",
    "Select",
    "StandardScale",
    "Threshold",
]
