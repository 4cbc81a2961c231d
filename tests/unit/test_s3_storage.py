"""Artifacts, datasets and inference logs on S3: a real moto server over HTTP (tests/s3.py), no Ray.

The log store on S3 must answer exactly as on a local directory (same rows in, same answers out),
and a query interleaved with the steps of a merge must see every row exactly once.
"""

from __future__ import annotations

import pickle
import subprocess
import sys
import textwrap
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import cloudpickle
import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest
from onnx import TensorProto, helper

from cluster.auth import Principal, Role, hash_token
from cluster.registry import Registry
from cluster.settings import CorralSettings
from cluster.store.artifacts import ArtifactStore, sha256_of
from cluster.store.db import Database
from monitoring.log_head import HEAD, PartitionHead
from monitoring.log_schema import inference_rows, shadow_rows, with_anomalies
from monitoring.log_store import INFERENCES, SHADOWS, LogStore, connect
from pipelines.storage import check_reachable
from tests.s3 import S3Server, s3_server, s3_uri  # noqa: F401 (fixtures)

REPO = Path(__file__).parents[2]
T0 = datetime(2026, 11, 23, 23, 59, 58, tzinfo=UTC)
FAR = (T0 - timedelta(days=2), T0 + timedelta(days=2))


def _request(i: int, when: datetime, n: int = 2, variant: str = "control", extra: bool = False) -> pa.Table:
    inputs = {"amount": [float(i)] * n, "age": list(range(n))}
    if extra:  # a later pipeline version logs one more input, and `age` as a float
        inputs |= {"age": [float(a) for a in range(n)], "merchant": [f"m{i}"] * n}
    rows = inference_rows(
        time=when,
        request_id=f"r{i}",
        version=3,
        variant=variant,
        inputs=pa.table(inputs),
        outputs=pa.table({"probability": [i / 100] * n}),
        latency_ms=1.5,
    )
    return with_anomalies(rows, {})


def _fill(store: LogStore) -> None:
    """The same log on every store: a date boundary, a schema change, shadows (one failing)."""
    for i in range(12):
        store.write(INFERENCES, "ws", "fraud", _request(i, T0 + timedelta(seconds=i / 4), extra=i >= 6))
    later = T0 + timedelta(seconds=5)
    for i in range(0, 12, 3):
        output = pa.table({"probability": [0.5, 0.6]}) if i % 2 == 0 else None
        rows = shadow_rows(
            time=later, request_id=f"r{i}", variant="gbdt", rows=2, output=output, error=None if output else "boom"
        )
        store.write(SHADOWS, "ws", "fraud", rows)


def _answers(store: LogStore) -> dict[str, object]:
    window = (T0 + timedelta(seconds=1), T0 + timedelta(seconds=2.5))
    return {
        "all": store.query("ws", "fraud", *FAR, limit=1000),
        "newest": store.query("ws", "fraud", *FAR, limit=5),
        "window": store.query("ws", "fraud", *window, limit=100),
        "none": store.query("ws", "other", *FAR, limit=10),
        "values": store.values("ws", "fraud", "in.age", *FAR),
        "columns": store.column_names("ws", "fraud", *FAR),
        "no columns": store.column_names("ws", "other", *FAR),
    }


def _assert_same(local: dict[str, object], remote: dict[str, object]) -> None:
    assert local.keys() == remote.keys()
    for key, expected in local.items():
        got = remote[key]
        if isinstance(expected, pa.Table):
            assert isinstance(got, pa.Table)
            assert got.schema == expected.schema, key
            assert got.to_pylist() == expected.to_pylist(), key
        elif isinstance(expected, tuple):
            times, values = got  # type: ignore[misc]
            order, expected_order = np.argsort(times, kind="stable"), np.argsort(expected[0], kind="stable")
            np.testing.assert_array_equal(times[order], expected[0][expected_order])
            np.testing.assert_array_equal(values[order], expected[1][expected_order])
        else:
            assert got == expected, key


def _head(fs: pafs.FileSystem, folder: str) -> PartitionHead:
    """A partition's head object as a reader reads it (none yet: the empty head)."""
    if fs.get_file_info(f"{folder}/{HEAD}").type == pafs.FileType.NotFound:
        return PartitionHead()
    with fs.open_input_stream(f"{folder}/{HEAD}") as src:
        return PartitionHead.model_validate_json(src.read())


def _relative(store: LogStore, files: list[str]) -> list[str]:
    return [f[len(store.root) + 1 :].rsplit("/", 1)[0] for f in files]


# --- settings -----------------------------------------------------------------------------------
def test_logs_uri_defaults_beside_the_storage_uri(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CORRAL_LOGS_URI", raising=False)
    monkeypatch.delenv("CORRAL_STORAGE_URI", raising=False)
    uri = "s3://bucket/corral?endpoint_override=127.0.0.1:9000&scheme=http"
    assert CorralSettings(home=tmp_path, storage_uri=uri).logs_uri == (
        "s3://bucket/corral/logs?endpoint_override=127.0.0.1:9000&scheme=http"
    )
    assert CorralSettings(home=tmp_path, storage_uri="s3://bucket/").logs_uri == "s3://bucket/logs"
    assert CorralSettings(home=tmp_path).logs_uri == str(tmp_path.resolve() / "logs")
    assert CorralSettings(home=tmp_path, storage_uri=str(tmp_path / "art")).logs_uri == str(tmp_path / "art" / "logs")
    monkeypatch.setenv("CORRAL_LOGS_URI", "s3://other/logs")
    assert CorralSettings(home=tmp_path, storage_uri=uri).logs_uri == "s3://other/logs"


# --- artifacts ----------------------------------------------------------------------------------
def test_artifacts_round_trip_and_dedupe_on_s3(s3_server: S3Server, s3_uri: str) -> None:  # noqa: F811
    store = ArtifactStore(s3_uri)
    data = b"model bytes " * 1000
    digest = store.put(data)
    assert digest == sha256_of(data) and store.put(data) == digest
    fs = s3_server.filesystem()
    stored = [
        i for i in fs.get_file_info(pafs.FileSelector(store.root, recursive=True)) if i.type == pafs.FileType.File
    ]
    assert [(i.path, i.size) for i in stored] == [(f"{store.root}/{digest[:2]}/{digest}", len(data))]  # no temp files
    assert ArtifactStore(s3_uri).get(digest) == data
    assert store.local_path(digest) is None
    with pytest.raises(FileNotFoundError):
        store.get(sha256_of(b"never stored"))


def test_a_corrupt_blob_on_s3_is_detected_and_uploading_it_again_repairs_it(
    s3_server: S3Server,  # noqa: F811
    s3_uri: str,  # noqa: F811
) -> None:
    store = ArtifactStore(s3_uri)
    data = b"\x00onnx" * 500
    digest = store.put(data)
    with s3_server.filesystem().open_output_stream(f"{store.root}/{digest[:2]}/{digest}") as out:
        out.write(data[:100])  # what an upload cut short leaves
    with pytest.raises(OSError, match="corrupt"):
        store.get(digest)
    assert store.put(data) == digest
    assert store.get(digest) == data


def test_datasets_are_stored_and_read_through_s3(s3_uri: str, tmp_path: Path) -> None:  # noqa: F811
    registry = Registry(Database(f"sqlite:///{tmp_path / 'corral.db'}"), ArtifactStore(s3_uri))
    registry.ensure_admin(hash_token("admin-secret"))
    admin = Principal(Role.admin, None)
    table = pa.table({"amount": [1.5, 2.5], "merchant": ["a", "b"]})
    info, created = registry.put_dataset(admin, "default", "ref", b"amount,merchant\n1.5,a\n2.5,b\n", "text/csv")
    assert created and info["rows"] == 2
    assert registry.load_dataset("default", "ref:1").equals(table)


def _scale_model(factor: float) -> bytes:
    graph = helper.make_graph(
        [helper.make_node("Mul", ["x", "k"], ["y"])],
        "scale",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 1])],
        [helper.make_tensor("k", TensorProto.FLOAT, [1], [factor])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return bytes(model.SerializeToString())


def test_a_step_replica_in_another_process_loads_its_model_from_s3(s3_uri: str) -> None:  # noqa: F811
    """What the app builder hands a replica is the store's pickled `get`: it reads S3 itself, with
    the credentials of its own environment (they are not in the pickle)."""
    store = ArtifactStore(s3_uri)
    digest = store.put(_scale_model(3.0))
    shipped = cloudpickle.dumps(store.get)  # as Ray ships a deployment's init arguments
    assert b"corral-test-secret" not in shipped and b"corral-test-secret" not in pickle.dumps(store)
    script = textwrap.dedent(
        f"""
        import sys
        import cloudpickle
        import pyarrow as pa
        from pipelines.loading import load_step
        from pipelines.spec import StepSpec

        fetch = cloudpickle.loads(sys.stdin.buffer.read())
        spec = StepSpec.model_validate({{"name": "model", "model": "m:1", "columns": ["x"]}})
        step = load_step(spec, fetch, {digest!r})
        print(step(pa.table({{"x": pa.array([1.0, 2.0], pa.float32())}})).column(0).to_pylist())
        """
    )
    run = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO, input=shipped, capture_output=True, check=False, timeout=120
    )
    assert run.returncode == 0, run.stderr.decode()[-3000:]
    assert run.stdout.decode().split("\n")[-2] in ("[3.0, 6.0]", "[[3.0], [6.0]]")


# --- inference logs -----------------------------------------------------------------------------
def test_the_log_store_on_s3_answers_as_on_a_local_directory(s3_uri: str, tmp_path: Path) -> None:  # noqa: F811
    local, remote = LogStore(tmp_path / "logs"), LogStore(s3_uri)
    assert not remote.local
    for store in (local, remote):
        _fill(store)
    for kind in (INFERENCES, SHADOWS):
        local_files, remote_files = local.files(kind, "ws", "fraud", *FAR), remote.files(kind, "ws", "fraud", *FAR)
        assert _relative(local, local_files) == _relative(remote, remote_files)
        assert [Path(f).name[:5] for f in remote_files] == ["part-"] * len(local_files)
    day = T0.date()
    assert (
        remote.files(INFERENCES, "ws", "fraud", datetime(2020, 1, 1, tzinfo=UTC), datetime(2020, 1, 2, tzinfo=UTC))
        == []
    )
    expected = _answers(local)
    assert expected["all"].num_rows == 24 and "in.merchant" in expected["columns"]  # type: ignore[attr-defined]
    _assert_same(expected, _answers(remote))

    # compacting both changes neither answer
    assert local.compact(min_files=2) == remote.compact(min_files=2) == 3  # 2 inference days + 1 shadow day
    assert len(remote.files(INFERENCES, "ws", "fraud", *FAR)) == 2
    _assert_same(expected, _answers(remote))
    _assert_same(expected, _answers(local))
    with pytest.raises(ValueError, match="not a local directory"):
        remote.partition(INFERENCES, "ws", "fraud", day)


def test_a_query_during_the_steps_of_a_merge_sees_every_row_exactly_once(
    s3_server: S3Server,  # noqa: F811
    s3_uri: str,  # noqa: F811
) -> None:
    store = LogStore(s3_uri, grace_s=60)
    for i in range(6):
        store.write(INFERENCES, "ws", "fraud", _request(i, T0 - timedelta(seconds=10 - i)))
    folder = store.folder(INFERENCES, "ws", "fraud", T0.date())
    ids = [f"r{i}" for i in range(6) for _ in range(2)]

    def check(files: int) -> None:
        assert store.query("ws", "fraud", *FAR, limit=100).column("request_id").to_pylist() == ids
        assert len(store.values("ws", "fraud", "in.amount", *FAR)[1]) == len(ids)
        assert len(store.files(INFERENCES, "ws", "fraud", *FAR)) == files

    parts = store.files(INFERENCES, "ws", "fraud", *FAR)
    check(files=6)
    merged = store.stage_merge(folder, parts)
    assert merged is not None and s3_server.filesystem().get_file_info(merged).type == pafs.FileType.File
    check(files=6)  # written, not committed: readers still read the parts
    fs = s3_server.filesystem()
    old_head = _head(fs, folder)  # a reader that took the head before the commit ...
    store.commit_merge(folder, parts, merged)
    check(files=1)  # committed: the merged file instead of the parts, which are still there
    listing = [i.base_name for i in fs.get_file_info(pafs.FileSelector(folder))]
    assert old_head.live(listing) == [Path(p).name for p in parts]  # ... and lists after it reads the parts
    stale = pq.ParquetDataset(parts, filesystem=store.fs).read()  # a reader that listed before the commit
    assert stale.num_rows == len(ids)
    assert store.collect_garbage(folder) == 0  # within the grace: nothing deleted
    check(files=1)
    assert store.collect_garbage(folder, now=time.time() + 61) == 6
    check(files=1)
    head = _head(fs, folder)
    assert head.replaced == {} and head.merged == [Path(merged).name]
    # A reader holding the pre-commit head would now miss the parts: readers must list within the grace.
    assert old_head.live(i.base_name for i in fs.get_file_info(pafs.FileSelector(folder))) == []
    with pytest.raises(OSError, match="keeps taking longer"):
        LogStore(s3_uri, grace_s=1e-9).files(INFERENCES, "ws", "fraud", *FAR)

    # a merge of the merged file with new parts; and a merge that crashed before its commit
    for i in range(6, 8):
        store.write(INFERENCES, "ws", "fraud", _request(i, T0 - timedelta(seconds=10 - i)))
    ids += [f"r{i}" for i in range(6, 8) for _ in range(2)]
    check(files=3)
    crashed = store.stage_merge(folder, store.files(INFERENCES, "ws", "fraud", *FAR))
    check(files=3)
    assert store.compact(min_files=2) == 1
    check(files=1)
    assert store.collect_garbage(folder, now=time.time() + 61) == 4  # the 3 replaced files and the orphan
    assert fs.get_file_info(crashed).type == pafs.FileType.NotFound  # type: ignore[arg-type]
    check(files=1)


def test_of_two_compactors_merging_the_same_parts_one_commits(s3_uri: str) -> None:  # noqa: F811
    """Say a sink replica and its replacement during a rollout: the second commit finds its parts
    merged already, gives up and takes its merged file back."""
    first, second = LogStore(s3_uri), LogStore(s3_uri)
    for i in range(4):
        first.write(INFERENCES, "ws", "fraud", _request(i, T0))
    folder = first.folder(INFERENCES, "ws", "fraud", T0.date())
    parts = first.files(INFERENCES, "ws", "fraud", *FAR)
    mine, theirs = first.stage_merge(folder, parts), second.stage_merge(folder, parts)
    assert mine is not None and theirs is not None
    assert first.commit_merge(folder, parts, mine)
    assert not second.commit_merge(folder, parts, theirs)
    assert first.fs.get_file_info(theirs).type == pafs.FileType.NotFound
    assert first.files(INFERENCES, "ws", "fraud", *FAR) == [mine]
    ids = second.query("ws", "fraud", *FAR, limit=100).column("request_id").to_pylist()
    assert ids == [f"r{i}" for i in range(4) for _ in range(2)]


def test_a_head_read_while_a_longer_head_is_put_is_read_again_not_cut(s3_uri: str) -> None:  # noqa: F811
    """pyarrow reads an object by its size, then ranged GETs: a PUT in between used to come back cut
    at the old size (invalid JSON, seen in CI). Heads of growing size are PUT while another thread
    reads them; every read is a whole head."""
    store = LogStore(s3_uri, grace_s=2.0)
    folder = store.folder(INFERENCES, "ws", "fraud", T0.date())
    stop = threading.Event()

    def put_growing_heads() -> None:
        i = 0
        while not stop.is_set():
            i += 1
            replaced = {f"part-{n:020d}-x.parquet": float(n) for n in range(i % 40)}
            store._put(f"{folder}/{HEAD}", PartitionHead(replaced=replaced).model_dump_json().encode())

    putter = threading.Thread(target=put_growing_heads)
    putter.start()
    try:
        reads = [store._head(folder) for _ in range(400)]
    finally:
        stop.set()
        putter.join()
    assert {len(head.replaced) for head in reads} > {0}  # the reads saw heads being replaced


def test_queries_racing_writes_and_merges_never_see_a_row_twice_or_miss_one(s3_uri: str) -> None:  # noqa: F811
    """Real threads: a writer, a compactor (merging and deleting with a 2 s grace) and a reader.
    Every row written before a query started is in its answer, and no row twice."""
    store = LogStore(s3_uri, grace_s=2.0)
    written = 0
    stop = threading.Event()
    errors: list[BaseException] = []

    def writer() -> None:
        nonlocal written
        try:
            while not stop.is_set():
                store.write(INFERENCES, "ws", "fraud", _request(written, T0, n=1))
                written += 1
        except BaseException as exc:
            errors.append(exc)

    def compactor() -> None:
        try:
            while not stop.is_set():
                store.compact(min_files=2)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=writer), threading.Thread(target=compactor)]
    for thread in threads:
        thread.start()
    queries = 0
    try:
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and not errors:
            before = written
            table = store.query("ws", "fraud", *FAR, limit=1_000_000)
            ids = table.column("request_id").to_pylist() if table.num_columns else []
            assert len(ids) == len(set(ids)), "a row came back twice"
            assert {f"r{i}" for i in range(before)} <= set(ids), "a row written before the query is missing"
            queries += 1
    finally:
        stop.set()
        for thread in threads:
            thread.join()
    assert not errors, errors
    assert queries > 5 and written > 20
    assert _head(store.fs, store.folder(INFERENCES, "ws", "fraud", T0.date())).merged, (
        "the compactor never merged: the race was not exercised"
    )


def test_duckdb_reads_the_s3_logs_through_pyarrow_without_httpfs(s3_server: S3Server, s3_uri: str) -> None:  # noqa: F811
    store = LogStore(s3_uri)
    store.write(INFERENCES, "ws", "fraud", _request(1, T0))
    assert store.query("ws", "fraud", *FAR, limit=10).num_rows == 2
    con = connect()
    try:
        extensions = dict(con.execute("SELECT extension_name, installed FROM duckdb_extensions()").fetchall())
        assert not extensions.get("httpfs"), "httpfs is installed: this test would not show it is unneeded"
        (path,) = store.files(INFERENCES, "ws", "fraud", *FAR)
        with pytest.raises(duckdb.Error, match="httpfs"):  # DuckDB alone cannot read S3 here
            con.execute(f"SELECT count(*) FROM read_parquet('s3://{path}')").fetchall()
    finally:
        con.close()


def test_a_merge_on_s3_holds_a_bounded_number_of_rows_in_memory(s3_uri: str) -> None:  # noqa: F811
    """As the local test: merging a 1.2 M-row part again streams it, here from and to S3."""
    store = LogStore(s3_uri)
    big = 1_200_000
    store.write(
        INFERENCES,
        "ws",
        "fraud",
        pa.table(
            {
                "time": pa.array([T0] * big, pa.timestamp("us", tz="UTC")),
                "request_id": pa.array([f"r{i % 1000}" for i in range(big)]),
                "in.x": pa.array(np.arange(big, dtype=np.float64)),
                "out.y": pa.array(np.arange(big, dtype=np.float64)),
            }
        ),
    )
    for i in range(3):
        store.write(INFERENCES, "ws", "fraud", _request(i, T0, n=3))
    script = textwrap.dedent(
        f"""
        import pyarrow as pa
        from monitoring.log_store import LogStore
        assert LogStore({s3_uri!r}).compact(min_files=2, small_bytes=2**40) == 1
        print(pa.default_memory_pool().max_memory())
        """
    )
    run = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, check=False)
    assert run.returncode == 0, run.stderr[-3000:]
    peak_mb = int(run.stdout.split()[-1]) / 2**20
    assert peak_mb < 60, f"a merge of 1.2 M rows on S3 peaked at {peak_mb:.0f} MB of Arrow memory"
    assert store.query("ws", "fraud", *FAR, limit=2_000_000).num_rows == big + 9


def test_an_unusable_storage_uri_is_refused_with_what_to_fix(s3_server: S3Server, s3_uri: str) -> None:  # noqa: F811
    check_reachable(s3_uri)
    check_reachable("/a/local/dir/not/made/yet")
    with pytest.raises(OSError, match="bucket 'no-such-bucket' does not exist"):
        check_reachable(f"s3://no-such-bucket/x?endpoint_override={s3_server.endpoint}&scheme=http")
    # a server that is down (the SDK retries a few times first), and a key in the URI stays hidden
    secret = f"s3://KEY:hush@{s3_server.bucket}/x?endpoint_override=127.0.0.1:{_closed_port()}&scheme=http"
    with pytest.raises(OSError, match=r"not reachable.*AWS_ACCESS_KEY_ID") as caught:
        check_reachable(secret)
    assert "hush" not in str(caught.value) and "KEY:***@" in str(caught.value)
    with pytest.raises(OSError, match="not reachable"):
        check_reachable(f"s3://{s3_server.bucket}/x?endpoint_overide=typo")


def _closed_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port
