"""Reference datasets over real HTTP: every upload format, versioning, listing, and the 4xx rules."""

from __future__ import annotations

import io

import orjson
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

pytestmark = pytest.mark.integration

WS = "data-team"
DATASETS = f"/api/v1/workspaces/{WS}/datasets"
TABLE = pa.table({"amount": [12.5, 3.0, 99.25], "n_tx": [1, 7, 3], "merchant": ["a", "b", "c"]})


def bearer(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


def arrow_bytes(table: pa.Table, *, stream: bool) -> bytes:
    sink = pa.BufferOutputStream()
    writer = pa.ipc.new_stream(sink, table.schema) if stream else pa.ipc.new_file(sink, table.schema)
    with writer:
        writer.write_table(table)
    return bytes(sink.getvalue().to_pybytes())


def parquet_bytes(table: pa.Table) -> bytes:
    sink = io.BytesIO()
    pq.write_table(table, sink)
    return sink.getvalue()


def csv_bytes(table: pa.Table) -> bytes:
    sink = io.BytesIO()
    pacsv.write_csv(table, sink)
    return sink.getvalue()


FORMATS = {
    "application/vnd.apache.parquet": parquet_bytes,
    "application/vnd.apache.arrow.file": lambda t: arrow_bytes(t, stream=False),
    "application/vnd.apache.arrow.stream": lambda t: arrow_bytes(t, stream=True),
    "text/csv": csv_bytes,
    "application/json": lambda t: orjson.dumps(t.to_pylist()),
}


@pytest.fixture(scope="module")
def tokens(admin) -> dict[str, str]:
    admin.create_workspace(WS)
    return {"viewer": admin.create_token("viewer", WS), "editor": admin.create_token("editor", WS)}


@pytest.fixture()
def editor(tokens) -> dict[str, str]:
    return bearer(tokens["editor"])


def put(http, name: str, body: bytes, content_type: str | None, headers: dict[str, str]):
    extra = {"content-type": content_type} if content_type else {}
    return http.put(f"{DATASETS}/{name}", content=body, headers={**headers, **extra})


@pytest.mark.parametrize("content_type", list(FORMATS))
def test_each_format_uploads_the_same_table(http, editor, content_type: str) -> None:
    name = "fmt-" + content_type.rsplit(".", 1)[-1].rsplit("/", 1)[-1]
    reply = put(http, name, FORMATS[content_type](TABLE), content_type, editor)
    assert reply.status_code == 201, reply.text
    info = reply.json()
    assert info["name"] == name and info["version"] == 1 and info["rows"] == 3
    assert info["columns"] == [
        {"name": "amount", "type": "double"},
        {"name": "n_tx", "type": "int64"},
        {"name": "merchant", "type": "string"},
    ]
    # every format lands as the same canonical Parquet: one sha256 for the same values
    reference = put(http, "fmt-reference", parquet_bytes(TABLE), None, editor).json()
    assert info["sha256"] == reference["sha256"]


def test_versions_and_listing(http, editor, admin) -> None:
    first = put(http, "ref", csv_bytes(TABLE), "text/csv", editor)
    assert first.status_code == 201 and first.json()["version"] == 1
    same = put(http, "ref", arrow_bytes(TABLE, stream=False), "application/vnd.apache.arrow.file", editor)
    assert same.status_code == 200 and same.json() == first.json()
    second = put(http, "ref", csv_bytes(TABLE.slice(1)), "text/csv", editor)
    assert second.status_code == 201 and second.json()["version"] == 2 and second.json()["rows"] == 2

    listed = {d["name"]: d for d in http.get(DATASETS, headers=editor).json()}
    assert listed["ref"]["version"] == 2 and listed["ref"]["rows"] == 2
    versions = http.get(f"{DATASETS}/ref", headers=editor).json()
    assert [(v["version"], v["rows"]) for v in versions] == [(1, 3), (2, 2)]

    # the SDK sees the same, and a DataFrame identical to version 2 keeps version 2
    from cluster.sdk import Client

    client = Client(admin.url, workspace=WS)
    assert client.upload_dataset("ref", TABLE.slice(1).to_pandas())["version"] == 2
    assert "ref" in {d["name"] for d in client.datasets()}
    assert [v["version"] for v in client.dataset_versions("ref")] == [1, 2]


@pytest.mark.parametrize(
    ("name", "body", "content_type", "status", "fragment"),
    [
        ("bad", b"", "text/csv", 400, "dataset is empty"),
        ("bad", b"\x00\x01garbage bytes", "application/octet-stream", 400, "not a Parquet or Arrow file"),
        ("bad", b"PAR1 but truncated", "application/vnd.apache.parquet", 400, "could not read the Parquet"),
        ("bad", b"a,b\n1,2\n", "image/png", 415, "text/csv"),
        ("bad", b"a,b\n", "text/csv", 422, "no rows"),
        ("bad", b'[{"a": {"nested": 1}}]', "application/json", 422, "flat"),
        ("Bad Name", b"a,b\n1,2\n", "text/csv", 422, "lowercase"),
    ],
)
def test_bad_uploads_are_4xx_and_store_nothing(
    http, editor, name: str, body: bytes, content_type: str, status: int, fragment: str
) -> None:
    reply = put(http, name, body, content_type, editor)
    assert reply.status_code == status, reply.text
    assert fragment in reply.json()["error"]
    assert http.get(f"{DATASETS}/bad", headers=editor).status_code == 404
    assert not {"bad", "Bad Name"} & {d["name"] for d in http.get(DATASETS, headers=editor).json()}


def test_auth(http, tokens, admin_headers) -> None:
    body = csv_bytes(TABLE)
    assert put(http, "guarded", body, "text/csv", {}).status_code == 401
    viewer = bearer(tokens["viewer"])
    refused = put(http, "guarded", body, "text/csv", viewer)
    assert refused.status_code == 403 and "editor" in refused.json()["error"]
    assert http.get(f"{DATASETS}/guarded", headers=admin_headers).status_code == 404
    assert http.get(DATASETS, headers=viewer).status_code == 200  # viewers may read
    other = put(http, "guarded", body, "text/csv", bearer(tokens["editor"]))
    assert other.status_code == 201
    # a token of another workspace does not even see this one
    outsider = http.put(
        "/api/v1/workspaces/default/datasets/x", content=body, headers={**viewer, "content-type": "text/csv"}
    )
    assert outsider.status_code == 404
