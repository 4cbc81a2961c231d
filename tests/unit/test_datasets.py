"""Reference datasets without Ray: the decoder (every format, every bad input) and the registry methods."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import orjson
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

from cluster.auth import Principal, Role, hash_token
from cluster.registry import Registry
from cluster.sdk import _dataset_body
from cluster.store.artifacts import ArtifactStore
from cluster.store.db import Database
from pipelines import datasets
from pipelines.datasets import parse_dataset_ref, read_dataset, to_parquet
from pipelines.errors import BadPayload, Forbidden, InvalidInput, NotFound, PayloadTooLarge, UnsupportedMediaType

ADMIN = Principal(Role.admin, None)
TABLE = pa.table(
    {
        "amount": [12.5, 3.0, 99.25],
        "n_tx": [1, 7, 3],
        "merchant": ["a", "b", "c"],
        "online": [True, False, True],
    }
)


def parquet_bytes(table: pa.Table) -> bytes:
    sink = io.BytesIO()
    pq.write_table(table, sink)
    return sink.getvalue()


def arrow_bytes(table: pa.Table, *, stream: bool = False) -> bytes:
    sink = pa.BufferOutputStream()
    writer = pa.ipc.new_stream(sink, table.schema) if stream else pa.ipc.new_file(sink, table.schema)
    with writer:
        writer.write_table(table)
    return bytes(sink.getvalue().to_pybytes())


def csv_bytes(table: pa.Table) -> bytes:
    sink = io.BytesIO()
    pacsv.write_csv(table, sink)
    return sink.getvalue()


ENCODINGS = {
    "parquet": (parquet_bytes, "application/vnd.apache.parquet"),
    "parquet, octet-stream": (parquet_bytes, "application/octet-stream"),
    "parquet, no content type": (parquet_bytes, None),
    "arrow file": (arrow_bytes, "application/vnd.apache.arrow.file"),
    "arrow stream": (lambda t: arrow_bytes(t, stream=True), "application/vnd.apache.arrow.stream"),
    "csv": (csv_bytes, "text/csv; charset=utf-8"),
    "json records": (lambda t: orjson.dumps(t.to_pylist()), "application/json"),
}


# --- decoder ------------------------------------------------------------------------------------
@pytest.mark.parametrize("encoding", list(ENCODINGS))
def test_every_format_round_trips_to_the_same_table_and_bytes(encoding: str) -> None:
    encode, content_type = ENCODINGS[encoding]
    table = read_dataset(encode(TABLE), content_type)
    assert table.equals(TABLE), table.schema
    assert to_parquet(table) == to_parquet(TABLE)  # so the same values are the same stored version


def test_pandas_index_and_metadata_do_not_change_the_dataset() -> None:
    frame = TABLE.to_pandas()
    frame.index = [10, 20, 30]  # a non-default index: pandas stores it as a column
    table = read_dataset(parquet_bytes(pa.Table.from_pandas(frame)), None)
    assert table.column_names == TABLE.column_names and table.schema.metadata is None
    assert to_parquet(table) == to_parquet(TABLE)


def test_categoricals_and_times_are_kept() -> None:
    frame = pd.DataFrame(
        {"colour": pd.Categorical(["red", "blue"]), "at": pd.to_datetime(["2026-01-01", "2026-01-02"], utc=True)}
    )
    table = read_dataset(arrow_bytes(pa.Table.from_pandas(frame)), "application/vnd.apache.arrow.file")
    assert pa.types.is_dictionary(table.schema.field("colour").type)
    assert datasets.from_parquet(to_parquet(table)).equals(table)


def test_describe_columns() -> None:
    assert datasets.describe_columns(TABLE)[:2] == [
        {"name": "amount", "type": "double"},
        {"name": "n_tx", "type": "int64"},
    ]


def test_json_records_with_missing_keys_get_nulls() -> None:
    table = read_dataset(b'[{"a": 1, "b": 2.5}, {"a": 2}]', "application/json")
    assert table.to_pylist() == [{"a": 1, "b": 2.5}, {"a": 2, "b": None}]


@pytest.mark.parametrize(
    ("body", "content_type", "error", "fragment"),
    [
        (b"", "text/csv", BadPayload, "send Parquet"),
        (b"", None, BadPayload, "Content-Type"),
        (b"\x00\x01garbage", None, BadPayload, "not a Parquet or Arrow file"),
        (b"\x00\x01garbage", "application/octet-stream", BadPayload, "with the matching Content-Type"),
        (b"PAR1 truncated", "application/vnd.apache.parquet", BadPayload, "pyarrow.parquet.write_table"),
        (b"PAR1 truncated", None, BadPayload, "could not read the Parquet file"),
        (b"not arrow", "application/vnd.apache.arrow.file", BadPayload, "pyarrow.ipc.new_file"),
        (b"not arrow", "application/vnd.apache.arrow.stream", BadPayload, "pyarrow.ipc.new_stream"),
        (b"a,b\n1,2\n3\n", "text/csv", BadPayload, "same number of comma-separated fields"),
        (b"a,b\n\xff\xfe,1\n", "text/csv", BadPayload, "UTF-8"),
        (b"[{not json", "application/json", BadPayload, "not valid JSON"),
        (b"a,b\n", "text/csv", InvalidInput, "no rows"),
        (b"[]", "application/json", InvalidInput, "non-empty JSON list"),
        (b'{"a": [1, 2]}', "application/json", InvalidInput, "list of objects"),
        (b"[1, 2]", "application/json", InvalidInput, "one JSON object per row"),
        (b"[{}, {}]", "application/json", InvalidInput, "no columns"),
        (b'[{"a": [1, 2]}, {"a": [3, 4]}]', "application/json", InvalidInput, "one column per item"),
        (b'[{"a": {"b": 1}}]', "application/json", InvalidInput, "struct"),
        (b'[{"a": null, "b": 1}]', "application/json", InvalidInput, "drop it or fill it in"),
        (b"a,b,a\n1,2,3\n", "text/csv", InvalidInput, "make every column name unique"),
        (b"a,,c\n1,2,3\n", "text/csv", InvalidInput, "give every column a name"),
        (b"a\n1\n", "image/png", UnsupportedMediaType, "with the matching Content-Type"),
        (b"a\n1\n", "application/x-www-form-urlencoded", UnsupportedMediaType, "text/csv"),
    ],
)
def test_bad_inputs_say_what_is_wrong_and_how_to_fix_it(
    body: bytes, content_type: str | None, error: type[Exception], fragment: str
) -> None:
    with pytest.raises(error) as caught:
        read_dataset(body, content_type)
    assert fragment in str(caught.value)


def test_binary_columns_are_refused() -> None:
    table = pa.table({"blob": pa.array([b"\x00"], pa.binary())})
    with pytest.raises(InvalidInput, match="numbers, booleans, strings or dates"):
        read_dataset(arrow_bytes(table), "application/vnd.apache.arrow.file")


def test_row_cap(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(datasets, "MAX_ROWS", 2)
    for encode, content_type in (ENCODINGS["parquet"], ENCODINGS["arrow file"], ENCODINGS["csv"]):
        with pytest.raises(PayloadTooLarge, match="above the limit of 2: upload a sample"):
            read_dataset(encode(TABLE), content_type)


def test_a_parquet_file_that_expands_past_the_limit_is_refused_from_its_footer(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(datasets, "MAX_PARQUET_UNPACKED_BYTES", 10)
    encode, content_type = ENCODINGS["parquet"]
    with pytest.raises(PayloadTooLarge, match=r"expands to [\d,]+ bytes, above the limit of 10"):
        read_dataset(encode(TABLE), content_type)


def test_dataset_refs() -> None:
    assert parse_dataset_ref("ref") == ("ref", None)
    assert parse_dataset_ref("ref:12") == ("ref", 12)
    for bad in ("ref:", "ref:0", "ref:x", "ref:-1", "Ref", "ref:1:2"):
        with pytest.raises(ValueError):
            parse_dataset_ref(bad)


# --- SDK body -------------------------------------------------------------------------------------
def test_sdk_sends_frames_and_tables_as_arrow_files_and_files_as_they_are(tmp_path: Path) -> None:
    for data in (TABLE, TABLE.to_pandas()):
        body, content_type = _dataset_body(data)
        assert content_type == "application/vnd.apache.arrow.file"
        assert read_dataset(body, content_type).equals(TABLE)
    (tmp_path / "d.csv").write_bytes(csv_bytes(TABLE))
    (tmp_path / "d.arrow").write_bytes(arrow_bytes(TABLE, stream=True))
    assert _dataset_body(tmp_path / "d.csv")[1] == "text/csv"
    assert _dataset_body(str(tmp_path / "d.arrow"))[1] == "application/vnd.apache.arrow.stream"
    with pytest.raises(ValueError, match=r"\.parquet"):
        _dataset_body(tmp_path / "d.xlsx")


# --- registry -----------------------------------------------------------------------------------
@pytest.fixture()
def registry(database_url: str, tmp_path: Path) -> Iterator[Registry]:
    """A registry on each backend (SQLite file, fresh PostgreSQL database): every test runs on both."""
    reg = Registry(Database(database_url), ArtifactStore(str(tmp_path / "artifacts")))
    reg.ensure_admin(hash_token("admin-secret"))
    yield reg
    reg.db.close()


def artifact_count(registry: Registry) -> int:
    return sum(1 for p in Path(registry.artifacts.root).rglob("*") if p.is_file())


def test_upload_versions_like_models(registry: Registry) -> None:
    first, created = registry.put_dataset(ADMIN, "default", "ref", csv_bytes(TABLE), "text/csv")
    assert created and first["version"] == 1 and first["rows"] == 3
    assert set(first) == {"name", "version", "rows", "columns", "sha256"}
    # the same values in another format are the same version
    again = registry.put_dataset(ADMIN, "default", "ref", parquet_bytes(TABLE), None)[0]
    assert again == first
    second = registry.put_dataset(ADMIN, "default", "ref", csv_bytes(TABLE.slice(0, 2)), "text/csv")[0]
    assert second["version"] == 2 and second["rows"] == 2 and second["sha256"] != first["sha256"]
    registry.put_dataset(ADMIN, "default", "other", b'[{"x": 1}]', "application/json")[0]

    listed = registry.list_datasets(ADMIN, "default")
    assert [(d["name"], d["version"]) for d in listed] == [("other", 1), ("ref", 2)]
    assert [v["version"] for v in registry.dataset_versions(ADMIN, "default", "ref")] == [1, 2]
    assert registry.load_dataset("default", "ref").equals(TABLE.slice(0, 2))
    assert registry.load_dataset("default", "ref:1").equals(TABLE)


def test_bad_uploads_store_nothing(registry: Registry) -> None:
    for name, body, content_type in (
        ("ref", b"", "text/csv"),
        ("ref", b"garbage", None),
        ("ref", b"a\n", "text/csv"),
        ("ref", b"a\n1\n", "image/png"),
        ("Bad Name", csv_bytes(TABLE), "text/csv"),
    ):
        with pytest.raises((BadPayload, InvalidInput, UnsupportedMediaType)):
            registry.put_dataset(ADMIN, "default", name, body, content_type)[0]
    assert registry.list_datasets(ADMIN, "default") == [] and artifact_count(registry) == 0


def test_roles(registry: Registry) -> None:
    registry.put_dataset(ADMIN, "default", "ref", csv_bytes(TABLE), "text/csv")[0]
    viewer = Principal(Role.viewer, "default")
    with pytest.raises(Forbidden, match="editor"):
        registry.put_dataset(viewer, "default", "ref", csv_bytes(TABLE), "text/csv")[0]
    assert registry.list_datasets(viewer, "default")[0]["name"] == "ref"
    registry.create_workspace(ADMIN, "other")
    with pytest.raises(NotFound):
        registry.list_datasets(Principal(Role.owner, "other"), "default")


def test_missing_datasets_say_how_to_upload(registry: Registry) -> None:
    with pytest.raises(NotFound, match="corral datasets upload ref FILE"):
        registry.dataset_versions(ADMIN, "default", "ref")
    with pytest.raises(InvalidInput, match="corral datasets upload ref FILE"):
        registry.load_dataset("default", "ref")
    registry.put_dataset(ADMIN, "default", "ref", csv_bytes(TABLE), "text/csv")[0]
    with pytest.raises(InvalidInput, match="name:version"):
        registry.load_dataset("default", "ref:2")
    with pytest.raises(InvalidInput, match="positive integer"):
        registry.load_dataset("default", "ref:latest")
