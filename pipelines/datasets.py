"""Reference datasets: a tabular upload (Parquet, Arrow IPC, CSV, JSON records) read into one flat
Arrow table, and the canonical Parquet bytes it is stored as.

Pure: no Ray. Errors are domain errors; the edge maps them to HTTP statuses.
"""

from __future__ import annotations

import io
import re
from collections import Counter
from collections.abc import Callable

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from pipelines.codecs.arrow import FILE_TYPE, STREAM_TYPE, decode_arrow
from pipelines.codecs.base import WireFormat
from pipelines.codecs.records import decode_records
from pipelines.errors import BadPayload, InvalidInput, PayloadTooLarge, UnsupportedMediaType
from pipelines.spec import check_name

PARQUET_TYPE = "application/vnd.apache.parquet"
CSV_TYPE = "text/csv"
JSON_TYPE = "application/json"
OCTET_STREAM = "application/octet-stream"
MAX_ROWS = 1_000_000
MAX_PARQUET_UNPACKED_BYTES = 512 * 2**20  # what a Parquet upload may expand to in memory

_PARQUET_MAGIC = b"PAR1"
_ARROW_FILE_MAGIC = b"ARROW1"
_PARQUET_ALIASES = (PARQUET_TYPE, "application/x-parquet", "application/parquet")
_VERSION_RE = re.compile(r"[1-9][0-9]*")

FORMATS_HINT = (
    f"send Parquet ({PARQUET_TYPE}), an Arrow IPC file ({FILE_TYPE}) or stream ({STREAM_TYPE}), "
    f"CSV with a header row ({CSV_TYPE}) or JSON records ({JSON_TYPE}, a list of objects), "
    "with the matching Content-Type"
)


def read_dataset(data: bytes, content_type: str | None) -> pa.Table:
    """The upload as a flat table with at least one row and one column, ready to store.

    The media type picks the reader; with no type (or application/octet-stream) the bytes must
    announce themselves by their magic number (Parquet, Arrow IPC file).
    """
    if not data:
        raise BadPayload(f"the dataset is empty: {FORMATS_HINT}")
    reader = _reader(_media_type(content_type), data)
    table = reader(data)
    return check_table(_without_pandas_index(table))


def check_table(table: pa.Table) -> pa.Table:
    """Reject what explainers cannot use as reference data; drop schema metadata so that the same
    values give the same stored bytes whichever format they came in."""
    if table.num_columns == 0:
        raise InvalidInput(f"the dataset has no columns: {FORMATS_HINT}")
    if table.num_rows == 0:
        raise InvalidInput("the dataset has no rows: send at least one row of data below the column names")
    if table.num_rows > MAX_ROWS:
        raise PayloadTooLarge(_too_many_rows(table.num_rows))
    _check_names(table.column_names)
    for field in table.schema:
        _check_type(field)
    return table.replace_schema_metadata(None).cast(pa.schema([f.remove_metadata() for f in table.schema]))


def to_parquet(table: pa.Table) -> bytes:
    """Canonical stored bytes: one chunk per column so identical values always write identical bytes."""
    sink = io.BytesIO()
    try:
        pq.write_table(table.combine_chunks(), sink, compression="zstd")
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        raise InvalidInput(
            f"the dataset cannot be stored as Parquet ({exc}); cast that column to a plain number, string or time"
        ) from None
    return sink.getvalue()


def from_parquet(data: bytes) -> pa.Table:
    """A stored dataset back as a table."""
    return pq.read_table(pa.BufferReader(data))


def describe_columns(table: pa.Table) -> list[dict[str, str]]:
    """Column names and Arrow types, e.g. [{"name": "amount", "type": "double"}]."""
    return [{"name": field.name, "type": str(field.type)} for field in table.schema]


def parse_dataset_ref(ref: str) -> tuple[str, int | None]:
    """'fraud-ref:2' -> ('fraud-ref', 2); 'fraud-ref' -> ('fraud-ref', None) meaning the latest."""
    name, sep, version = ref.partition(":")
    check_name("dataset", name)
    if not sep:
        return name, None
    if not _VERSION_RE.fullmatch(version):
        raise ValueError(f"version in dataset {ref!r} must be a positive integer, like '{name}:1'")
    return name, int(version)


# --- readers ------------------------------------------------------------------------------------
Reader = Callable[[bytes], pa.Table]


def _media_type(content_type: str | None) -> str:
    # Parameters (charset, format=pandas-records) do not change which reader applies.
    return (content_type or "").split(";")[0].strip().lower()


def _reader(media: str, data: bytes) -> Reader:
    if media in ("", OCTET_STREAM):
        return _sniff(media, data)
    if media in _PARQUET_ALIASES:
        return _read_parquet
    if media == FILE_TYPE:
        return _read_arrow_file
    if media == STREAM_TYPE:
        return _read_arrow_stream
    if media == CSV_TYPE:
        return _read_csv
    if media == JSON_TYPE:
        return _read_json
    raise UnsupportedMediaType(f"Content-Type {media!r} is not a dataset format Corral reads: {FORMATS_HINT}")


def _sniff(media: str, data: bytes) -> Reader:
    """Untyped bytes: only self-describing binary formats can be recognised."""
    if data.startswith(_PARQUET_MAGIC):
        return _read_parquet
    if data.startswith(_ARROW_FILE_MAGIC):
        return _read_arrow_file
    what = f"Content-Type {media}" if media else "no Content-Type"
    raise BadPayload(f"the dataset was sent with {what} and is not a Parquet or Arrow file: {FORMATS_HINT}")


def _read_parquet(data: bytes) -> pa.Table:
    try:
        parquet = pq.ParquetFile(pa.BufferReader(data))
        # Parquet compresses well: a small body can hold billions of rows, so trust the footer first.
        meta = parquet.metadata
        rows = meta.num_rows
        unpacked = sum(meta.row_group(i).total_byte_size for i in range(meta.num_row_groups))
        table = parquet.read() if rows <= MAX_ROWS and unpacked <= MAX_PARQUET_UNPACKED_BYTES else None
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, OSError) as exc:
        raise BadPayload(
            f"could not read the Parquet file ({exc}); send a complete file written by "
            "pandas.DataFrame.to_parquet or pyarrow.parquet.write_table"
        ) from None
    if table is None and rows > MAX_ROWS:
        raise PayloadTooLarge(_too_many_rows(rows))
    if table is None:
        raise PayloadTooLarge(
            f"the Parquet file expands to {unpacked:,} bytes, above the limit of {MAX_PARQUET_UNPACKED_BYTES:,}: "
            "upload a sample of the rows or fewer columns"
        )
    return table


def _read_arrow_file(data: bytes) -> pa.Table:
    return decode_arrow(data, WireFormat.ARROW_FILE).table


def _read_arrow_stream(data: bytes) -> pa.Table:
    return decode_arrow(data, WireFormat.ARROW_STREAM).table


def _read_csv(data: bytes) -> pa.Table:
    try:
        table = pacsv.read_csv(pa.BufferReader(data))
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        raise BadPayload(
            f"could not read the CSV ({exc}); send UTF-8 CSV with a header row of column names and "
            "the same number of comma-separated fields on every line"
        ) from None
    # pyarrow reads text that is not valid UTF-8 as binary rather than failing: that is an encoding mistake.
    binary = [f.name for f in table.schema if pa.types.is_binary(f.type) or pa.types.is_large_binary(f.type)]
    if binary:
        raise BadPayload(f"CSV column(s) {binary} are not valid UTF-8 text: save the file as UTF-8 and send it again")
    return table


def _read_json(data: bytes) -> pa.Table:
    return decode_records(data).table


# --- checks -------------------------------------------------------------------------------------
def _without_pandas_index(table: pa.Table) -> pa.Table:
    """pandas stores a non-default index as a column (`__index_level_0__`): it is not a feature."""
    metadata = table.schema.pandas_metadata or {}
    index = [c for c in metadata.get("index_columns", []) if isinstance(c, str) and c in table.column_names]
    return table.drop_columns(index) if index else table


def _check_names(names: list[str]) -> None:
    blank = [i for i, name in enumerate(names) if not name.strip()]
    if blank:
        raise InvalidInput(
            f"column(s) at position {blank} have no name: give every column a name (CSV: in the header row)"
        )
    duplicates = sorted(name for name, count in Counter(names).items() if count > 1)
    if duplicates:
        raise InvalidInput(f"column name(s) {duplicates} appear more than once: make every column name unique")


def _check_type(field: pa.Field) -> None:
    if pa.types.is_null(field.type):
        raise InvalidInput(f"column {field.name!r} has no values (null in every row): drop it or fill it in")
    if not _flat(field.type):
        raise InvalidInput(
            f"column {field.name!r} has type {field.type}, which a reference dataset cannot hold: use flat "
            "columns of numbers, booleans, strings or dates/times (split a list or struct column into one "
            "column per item, e.g. f_0, f_1, ...)"
        )


def _flat(type_: pa.DataType) -> bool:
    """Scalar types explainers and Parquet both handle: numbers, booleans, strings, dates and times."""
    if pa.types.is_dictionary(type_):
        return _flat(type_.value_type)  # pandas categoricals
    t = pa.types
    return (
        t.is_integer(type_)
        or t.is_floating(type_)
        or t.is_decimal(type_)
        or t.is_boolean(type_)
        or t.is_string(type_)
        or t.is_large_string(type_)
        or t.is_string_view(type_)
        or (t.is_temporal(type_) and not t.is_interval(type_))
    )


def _too_many_rows(rows: int) -> str:
    return (
        f"the dataset has {rows:,} rows, above the limit of {MAX_ROWS:,}: upload a sample "
        "(e.g. df.sample(100_000)); explanations need far fewer reference rows than that"
    )
