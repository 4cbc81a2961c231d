"""The pure part of batch inference: which files a run reads, where it writes, what a row holds."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pydantic import ValidationError

from pipelines.batch import BatchRequest, list_inputs, prepare_output, with_inputs
from pipelines.errors import Conflict, InvalidInput


def _tree(root: Path) -> None:
    pq.write_table(pa.table({"x": [1.0]}), root / "b.parquet")
    (root / "a.csv").write_text("x\n1\n")
    (root / "deep" / "er").mkdir(parents=True)
    (root / "deep" / "er" / "c.jsonl").write_text('{"x": 1}\n')
    (root / "deep" / "d.PARQUET").write_bytes((root / "b.parquet").read_bytes())
    (root / ".hidden.csv").write_text("x\n")
    (root / "_tmp").mkdir()
    (root / "_tmp" / "e.csv").write_text("x\n")
    (root / "README.md").write_text("not data")


def test_directories_are_walked_by_format_skipping_hidden_files(tmp_path: Path) -> None:
    _tree(tmp_path)
    groups = {group.format: group.paths for group in list_inputs([str(tmp_path)])}
    assert groups == {
        "parquet": (str(tmp_path / "b.parquet"), str(tmp_path / "deep" / "d.PARQUET")),
        "csv": (str(tmp_path / "a.csv"),),
        "json": (str(tmp_path / "deep" / "er" / "c.jsonl"),),
    }


def test_files_and_file_uris_are_inputs_too(tmp_path: Path) -> None:
    _tree(tmp_path)
    groups = list_inputs([str(tmp_path / "a.csv"), f"file://{tmp_path / 'b.parquet'}"])
    assert sorted((g.format, len(g.paths)) for g in groups) == [("csv", 1), ("parquet", 1)]


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda root: str(root / "missing.parquet"), "not found: check the path"),
        (lambda root: "relative/data.csv", "relative path: the cluster reads it, so give an absolute path"),
        (lambda root: str(root / "README.md"), "cannot tell the format of"),
        (lambda root: str(root / "_tmp"), "holds no input files"),
        (lambda root: "nosuchscheme://bucket/x", "cannot open 'nosuchscheme://bucket/x'"),
    ],
)
def test_bad_inputs_say_what_to_fix(tmp_path: Path, make, message: str) -> None:
    _tree(tmp_path)
    (tmp_path / "_tmp" / "e.csv").unlink()
    with pytest.raises(InvalidInput, match=message):
        list_inputs([make(tmp_path)])


def test_the_output_directory_is_made_and_never_mixed_with_an_earlier_run(tmp_path: Path) -> None:
    out = tmp_path / "out" / "nested"
    prepare_output(str(out))
    assert out.is_dir()
    prepare_output(str(out))  # still empty: fine
    pq.write_table(pa.table({"x": [1]}), out / "part-0.parquet")
    with pytest.raises(Conflict, match="already holds 1 Parquet file"):
        prepare_output(str(out))
    with pytest.raises(InvalidInput, match="is a file"):
        prepare_output(str(out / "part-0.parquet"))


def test_rows_hold_the_inputs_then_the_outputs_and_an_output_wins_a_name() -> None:
    inputs = pa.table({"id": [1, 2], "x": [0.5, 1.5], "score": [9, 9]})
    outputs = pa.table({"score": [0.1, 0.9], "flag": [0, 1]})
    rows = with_inputs(inputs, outputs)
    assert rows.column_names == ["id", "x", "score", "flag"]
    assert rows.column("score").to_pylist() == [0.1, 0.9]


def test_a_step_that_changes_the_row_count_is_refused() -> None:
    with pytest.raises(InvalidInput, match="returned 1 rows for 2"):
        with_inputs(pa.table({"x": [1, 2]}), pa.table({"y": [1]}))


def test_batch_requests_are_strict() -> None:
    with pytest.raises(ValidationError, match="colour"):
        BatchRequest.model_validate({"inputs": ["/d"], "output": "/o", "colour": "red"})
    with pytest.raises(ValidationError, match="inputs"):
        BatchRequest.model_validate({"inputs": [], "output": "/o"})
    assert BatchRequest.model_validate({"inputs": ["/d"], "output": "/o"}).workers == 2
