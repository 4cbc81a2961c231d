"""The CLI as a user runs it: upload, apply, deploy, infer from files, list, versions, status."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from cluster.convert import to_onnx
from examples.fraud import FEATURES, make_transactions

pytestmark = pytest.mark.integration
CORRAL = str(Path(sys.executable).parent / "corral")


def corral(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([CORRAL, *args], capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory, fraud_model, corral) -> Path:
    path = Path(tmp_path_factory.mktemp("cli"))
    (path / "model.onnx").write_bytes(to_onnx(fraud_model["model"], n_features=len(FEATURES)))
    (path / "spec.yaml").write_text(
        "steps:\n"
        "  - name: model\n"
        "    model: cli-model\n"
        f"    columns: [{', '.join(FEATURES)}]\n"
        "    resources: {num_cpus: 0.25}\n"
        "  - name: post\n"
        "    python: pipelines.builtin:Threshold\n"
        "    config: {column: probabilities, index: 1, threshold: 0.5, output: flagged}\n"
        "    resources: {num_cpus: 0.25}\n"
    )
    make_transactions(20, seed=5)[FEATURES].to_csv(path / "rows.csv", index=False)
    return path


def test_cli_round_trip(workdir: Path) -> None:
    upload = corral("models", "upload", "cli-model", str(workdir / "model.onnx"))
    assert upload.returncode == 0, upload.stderr
    assert "cli-model:1" in upload.stdout and "probabilities" in upload.stdout

    apply = corral("pipelines", "apply", "cli-pipe", str(workdir / "spec.yaml"))
    assert apply.returncode == 0, apply.stderr
    assert "version 1" in apply.stdout

    deploy = corral("pipelines", "deploy", "cli-pipe")
    assert deploy.returncode == 0, deploy.stderr
    assert "running" in deploy.stdout

    out = workdir / "scored.csv"
    infer = corral("infer", "cli-pipe", str(workdir / "rows.csv"), "--output", str(out))
    assert infer.returncode == 0, infer.stderr
    import pandas as pd

    scored = pd.read_csv(out)
    assert len(scored) == 20 and set(scored["flagged"]) <= {0, 1}

    listing = corral("pipelines", "list")
    assert "cli-pipe" in listing.stdout
    versions = corral("pipelines", "versions", "cli-pipe")
    assert versions.returncode == 0 and "main" in versions.stdout
    status = corral("status")
    assert "running" in status.stdout and "api docs" in status.stdout

    time.sleep(1.0)  # log rows reach the store within a second
    logs_out = workdir / "logs.parquet"
    logs = corral("logs", "cli-pipe", "--since", "10m", "--output", str(logs_out))
    assert logs.returncode == 0, logs.stderr
    logged = pd.read_parquet(logs_out)
    assert len(logged) == 20 and (logged["out.flagged"].to_numpy() == scored["flagged"].to_numpy()).all()
    shown = corral("logs", "cli-pipe", "--since", "10m", "--limit", "3")
    assert shown.returncode == 0 and "3 rows" in shown.stdout and shown.stdout.count(" main ") == 3, shown.stdout

    (workdir / "assay.yaml").write_text(
        "pipeline: cli-pipe\ntarget: in.amount\nbaseline: {values: [1, 5, 10, 20, 50, 100, 200, 500]}\n"
        "window: {width: 1h}\nmetric: psi\n"
    )
    applied = corral("assays", "apply", "cli-amount", str(workdir / "assay.yaml"))
    assert applied.returncode == 0, applied.stderr
    assert "cli-amount" in corral("assays", "list").stdout
    preview = corral("assays", "preview", "cli-amount", "--since", "1h")
    assert preview.returncode == 0 and "20" in preview.stdout, preview.stdout + preview.stderr
    chart = workdir / "drift.png"
    drawn = corral("assays", "chart", "cli-amount", "--preview", "--since", "1h", "-o", str(chart))
    assert drawn.returncode == 0, drawn.stderr
    assert chart.read_bytes().startswith(b"\x89PNG")
    bad_since = corral("logs", "cli-pipe", "--since", "yesterday")
    assert bad_since.returncode == 1 and "--since" in bad_since.stderr

    undeploy = corral("pipelines", "undeploy", "cli-pipe")
    assert undeploy.returncode == 0, undeploy.stderr


def test_cli_errors_say_how_to_fix(workdir: Path) -> None:
    missing = corral("pipelines", "deploy", "no-such-pipeline")
    assert missing.returncode == 1
    assert "404" in missing.stderr and "corral pipelines list" in missing.stderr
    pickle = workdir / "model.pkl"
    pickle.write_bytes(b"not really")
    refused = corral("models", "upload", "p", str(pickle))
    assert refused.returncode == 1 and "--trust-pickle" in refused.stderr


def test_cli_datasets(workdir: Path) -> None:
    upload = corral("datasets", "upload", "cli-ref", str(workdir / "rows.csv"))
    assert upload.returncode == 0, upload.stderr
    assert "cli-ref:1" in upload.stdout and "20 rows" in upload.stdout and "amount" in upload.stdout
    again = corral("datasets", "upload", "cli-ref", str(workdir / "rows.csv"))
    assert again.returncode == 0 and "cli-ref:1" in again.stdout, again.stdout + again.stderr
    listing = corral("datasets", "list")
    assert listing.returncode == 0 and "cli-ref" in listing.stdout, listing.stderr
    (workdir / "empty.csv").write_text("amount,age\n")
    empty = corral("datasets", "upload", "cli-ref", str(workdir / "empty.csv"))
    assert empty.returncode == 1 and "422" in empty.stderr and "no rows" in empty.stderr


def test_cli_explain(workdir: Path) -> None:
    """`corral explain` on the round trip's pipeline, with the dataset uploaded above as reference."""
    import json

    import pandas as pd

    deploy = corral("pipelines", "deploy", "cli-pipe")
    assert deploy.returncode == 0, deploy.stderr
    row = pd.read_csv(workdir / "rows.csv").iloc[0].to_dict()
    chart = workdir / "why.png"
    saved = workdir / "why.json"
    args = ["--dataset", "cli-ref", "--chart", str(chart), "-o", str(saved)]
    why = corral("explain", "cli-pipe", "-m", "anchors", "--row", json.dumps(row), *args)
    assert why.returncode == 0, why.stdout + why.stderr
    assert "IF " in why.stdout and "precision" in why.stdout and "dataset cli-ref" in why.stdout
    assert chart.read_bytes().startswith(b"\x89PNG")
    explanation = json.loads(saved.read_text())
    assert explanation["meta"]["method"] == "anchors" and explanation["data"]["precision"] >= 0.0
    assert explanation["meta"]["reference"] == {"source": "dataset", "dataset": "cli-ref", "rows": 20}
    assert isinstance(explanation["data"]["anchor"], list) and explanation["data"]["prediction"] in (0, 1)
    wrong = corral("explain", "cli-pipe", "-m", "lime", "--row", json.dumps(row), "--dataset", "cli-ref")
    assert wrong.returncode == 1 and "422" in wrong.stderr and "anchors" in wrong.stderr
    not_json = corral("explain", "cli-pipe", "-m", "anchors", "--row", "{amount: 3}")
    assert not_json.returncode == 1 and "--row is not JSON" in not_json.stderr
    assert corral("pipelines", "undeploy", "cli-pipe").returncode == 0


def test_cli_batch(workdir: Path) -> None:
    """`corral batch` over a directory of the round trip's pipeline; errors say how to fix."""
    import pandas as pd

    deploy = corral("pipelines", "deploy", "cli-pipe")
    assert deploy.returncode == 0, deploy.stderr
    data = workdir / "batch-in"
    data.mkdir()
    (data / "rows.csv").write_bytes((workdir / "rows.csv").read_bytes())
    out = workdir / "batch-out"
    run = corral("batch", "cli-pipe", str(data), "--output", str(out))
    assert run.returncode == 0, run.stdout + run.stderr
    assert "20 rows" in run.stdout and "1 file(s)" in run.stdout and "variant main" in run.stdout, run.stdout
    scored = pd.read_parquet(out)
    assert len(scored) == 20 and set(scored["flagged"]) <= {0, 1} and "amount" in scored.columns
    again = corral("batch", "cli-pipe", str(data), "--output", str(out))
    assert again.returncode == 1 and "409" in again.stderr and "choose a new directory" in again.stderr
    missing = corral("batch", "cli-pipe", str(workdir / "nothing-here"), "--output", str(workdir / "o2"))
    assert missing.returncode == 1 and "422" in missing.stderr and "not found" in missing.stderr
    assert "rows" not in missing.stdout  # no progress bar for a run that never started
