"""Batch inference, the pure part: what a batch request is, which files it reads, what it writes.

The Ray Data job that runs it lives in cluster.batch; this module knows only pyarrow. Inputs are
local paths (absolute, read by the cluster's nodes) or pyarrow.fs URIs (`s3://...`); the format of a
file comes from its extension.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.fs as pafs
from pydantic import BaseModel, ConfigDict, Field

from pipelines import storage
from pipelines.errors import Conflict, InvalidInput

FORMATS = {".parquet": "parquet", ".pq": "parquet", ".csv": "csv", ".jsonl": "json", ".ndjson": "json", ".json": "json"}
FORMATS_HINT = "Parquet (.parquet), CSV with a header row (.csv) or JSON lines (.jsonl)"
MAX_INPUT_FILES = 100_000


class BatchRequest(BaseModel):
    """`POST .../pipelines/{p}/batch`: run a pipeline version over files, write Parquet under `output`."""

    model_config = ConfigDict(extra="forbid")

    inputs: list[str] = Field(min_length=1, description="files, directories or pyarrow.fs URIs (s3://...)")
    output: str = Field(min_length=1, description="a new or empty directory (local path or URI) for Parquet files")
    version: int | None = Field(default=None, ge=1, description="default: the deployed version")
    variant: str | None = Field(default=None, description="default: the variant with the most live traffic")
    log: bool = Field(default=False, description="also write every row to the inference log")
    workers: int = Field(default=2, ge=1, le=256, description="Ray Data actors running the steps")
    batch_rows: int | None = Field(
        default=None, ge=1, le=4_194_304, description="rows per call of the steps; default a block (a file, <= 128 MiB)"
    )


@dataclass(frozen=True)
class InputFiles:
    """The files of one format, on one filesystem."""

    format: str
    filesystem: pafs.FileSystem
    paths: tuple[str, ...]


def filesystem_of(uri: str) -> tuple[pafs.FileSystem, str]:
    """The filesystem and path of an absolute local path or a pyarrow.fs URI."""
    if storage.is_uri(uri):
        try:
            return storage.filesystem_of(uri)
        except (pa.ArrowInvalid, OSError, ValueError) as exc:
            shown = storage.redacted(uri)
            raise InvalidInput(f"cannot open {shown!r}: {exc}. Use a local path or a URI like s3://b/path") from None
    if not Path(uri).is_absolute():
        raise InvalidInput(f"{uri!r} is a relative path: the cluster reads it, so give an absolute path")
    return storage.filesystem_of(uri)


def format_of(path: str) -> str | None:
    return FORMATS.get(Path(path).suffix.lower())


def list_inputs(inputs: list[str]) -> list[InputFiles]:
    """Every input file, grouped by format; directories are walked (hidden and `_` files skipped)."""
    groups: dict[tuple[str, str], tuple[pafs.FileSystem, list[str]]] = {}
    count = 0
    for uri in inputs:
        fs, path = filesystem_of(uri)
        info = _info(fs, path, uri)
        if info.type == pafs.FileType.Directory:
            found = [
                f.path
                for f in fs.get_file_info(pafs.FileSelector(path, recursive=True))
                if f.type == pafs.FileType.File and not _hidden(f.path, path) and format_of(f.path)
            ]
            if not found:
                raise InvalidInput(f"directory {uri!r} holds no input files: put {FORMATS_HINT} files in it")
        else:
            if format_of(path) is None:
                raise InvalidInput(f"cannot tell the format of {uri!r} from its name: use {FORMATS_HINT}")
            found = [path]
        for file in sorted(found):
            kind = format_of(file)
            assert kind is not None
            key = (kind, fs.type_name + (uri.split("://", 1)[1].split("/", 1)[0] if storage.is_uri(uri) else ""))
            groups.setdefault(key, (fs, []))[1].append(file)
        count += len(found)
        if count > MAX_INPUT_FILES:
            raise InvalidInput(f"more than {MAX_INPUT_FILES:,} input files: merge them or run several batches")
    return [InputFiles(kind, fs, tuple(paths)) for (kind, _), (fs, paths) in groups.items()]


def _info(fs: pafs.FileSystem, path: str, uri: str) -> pafs.FileInfo:
    try:
        info = fs.get_file_info(path)
    except OSError as exc:
        raise InvalidInput(f"cannot read {uri!r}: {exc}") from None
    if info.type == pafs.FileType.NotFound:
        raise InvalidInput(f"input {uri!r} not found: check the path (the cluster's nodes read it)")
    return info


def _hidden(path: str, root: str) -> bool:
    return any(part.startswith((".", "_")) for part in Path(path).relative_to(root).parts)


def prepare_output(uri: str) -> tuple[pafs.FileSystem, str]:
    """Create the output directory; one that already holds Parquet files is refused, so the results
    of two runs never mix."""
    fs, path = filesystem_of(uri)
    info = fs.get_file_info(path)
    if info.type == pafs.FileType.File:
        raise InvalidInput(f"output {uri!r} is a file: give a directory for the Parquet files")
    if info.type == pafs.FileType.Directory:
        existing = [f for f in fs.get_file_info(pafs.FileSelector(path)) if f.path.endswith(".parquet")]
        if existing:
            raise Conflict(f"output {uri!r} already holds {len(existing)} Parquet file(s): choose a new directory")
    fs.create_dir(path, recursive=True)
    return fs, path


def with_inputs(inputs: pa.Table, outputs: pa.Table) -> pa.Table:
    """The rows written: the input columns, then the output columns (an output of the same name wins)."""
    if inputs.num_rows != outputs.num_rows:
        raise InvalidInput(
            f"the pipeline returned {outputs.num_rows} rows for {inputs.num_rows}: batch inference needs steps "
            "that keep one output row per input row"
        )
    kept = [name for name in inputs.column_names if name not in outputs.column_names]
    columns = [inputs.column(name) for name in kept] + list(outputs.columns)
    return pa.table(columns, names=kept + outputs.column_names)
