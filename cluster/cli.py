"""The `corral` command line. Every command mirrors an SDK call; `--help` on each says how."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

from cluster.settings import CorralSettings

app = typer.Typer(
    help="Corral: serve ML pipelines (Python steps + ONNX models) on Ray.\n\n"
    "Start with `corral up`, then `corral demo` for a guided tour, or see `corral COMMAND --help`.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
models_app = typer.Typer(help="Upload and list models (ONNX, or scikit-learn/XGBoost/LightGBM converted here).")
code_app = typer.Typer(help="Upload Python step code (a .py module or a .zip package) for `code:` steps.")
datasets_app = typer.Typer(
    help="Upload and list reference datasets (tables versioned like models), e.g. reference data for explanations."
)
pipelines_app = typer.Typer(help="Apply specs, deploy, undeploy, list pipelines and their versions.")
ws_app = typer.Typer(help="Workspaces and their access tokens.")
traffic_app = typer.Typer(
    help="Live traffic of a deployed pipeline: A/B and canary weights, key split, shadows. Changes take "
    "effect on the running routers with no restart and no failed request."
)
assays_app = typer.Typer(
    help="Drift assays: watch one logged column (in.<x> or out.<y>) against a baseline, window by window, "
    "and alert (Prometheus gauge, webhook) when PSI/maxdiff/sumdiff crosses a threshold."
)
app.add_typer(assays_app, name="assays")
app.add_typer(traffic_app, name="traffic")
app.add_typer(models_app, name="models")
app.add_typer(code_app, name="code")
app.add_typer(datasets_app, name="datasets")
app.add_typer(pipelines_app, name="pipelines")
app.add_typer(ws_app, name="workspaces")
console = Console()
err = Console(stderr=True)

WorkspaceOpt = typer.Option("default", "--workspace", "-w", help="workspace to act in")


def _client(workspace: str = "default") -> Any:
    from cluster.sdk import Client

    return Client(workspace=workspace)


def _fail(exc: Exception) -> None:
    from cluster.sdk import CorralAPIError

    if isinstance(exc, CorralAPIError):
        err.print(f"[red]error {exc.status}:[/red] {exc.message}")
    else:
        err.print(f"[red]error:[/red] {exc}")
    raise typer.Exit(1)


def _run(fn: Any, *args: Any, **kwargs: Any) -> Any:
    import httpx

    from cluster.sdk import CorralAPIError

    try:
        return fn(*args, **kwargs)
    except (CorralAPIError, ValueError, OSError) as exc:
        _fail(exc)
    except httpx.ConnectError:
        err.print("[red]error:[/red] cannot reach Corral: is it up? Run `corral up` (or set CORRAL_URL)")
        raise typer.Exit(1) from None


def _say(message: str) -> None:
    console.print(f"[cyan]•[/cyan] {message}")


# --- lifecycle ----------------------------------------------------------------------------------
@app.command()
def up(
    address: str = typer.Option(None, help="join this Ray cluster (ray://… or host:port) instead of starting one"),
) -> None:
    """Start Corral: a local Ray head (or --address), Serve on port 8000, the control API, and every
    pipeline that was deployed before."""
    from cluster.lifecycle import LifecycleError
    from cluster.lifecycle import up as do_up

    settings = CorralSettings(ray_address=address) if address else CorralSettings()
    try:
        result = do_up(settings, _say)
    except LifecycleError as exc:
        _fail(exc)
        return
    console.print(f"\n[green]Corral is up[/green] at {result.url}")
    console.print(f"  API docs:       {result.url}/api/v1/docs")
    console.print(f"  Ray dashboard:  {result.dashboard_url}  (token: ~/.ray/auth_token)")
    console.print(f"  admin token:    {settings.admin_token_path}")


@app.command()
def down() -> None:
    """Stop Corral and the local Ray head it started. Deployed pipelines come back on `corral up`."""
    from cluster.lifecycle import down as do_down

    do_down(CorralSettings(), _say)
    console.print("[green]Corral is down[/green]")


@app.command()
def status(workspace: str = WorkspaceOpt) -> None:
    """Show the cluster, the pipelines and where to look (API docs, Ray dashboard, metrics)."""
    from cluster.lifecycle import status as do_status

    info = do_status(CorralSettings())
    table = Table(show_header=False, box=None)
    for key in ("ray", "url", "api_docs", "dashboard", "dashboard_token_file", "metrics", "home"):
        if key in info:
            table.add_row(key.replace("_", " "), str(info[key]))
    console.print(table)
    if info.get("ray") == "running":
        from cluster.sdk import CorralAPIError

        try:
            _print_pipelines(_client(workspace).pipelines(), workspace)
        except (CorralAPIError, OSError) as exc:
            err.print(f"control API not answering: {exc}")
    if info.get("ray") == "running":
        console.print(
            "Open the dashboard in a browser; its REST API needs header "
            "'Authorization: Bearer <contents of ~/.ray/auth_token>'."
        )


@app.command()
def demo(requests: int = typer.Option(300, help="single-row requests to send")) -> None:
    """Start Corral, train a fraud model on synthetic data, deploy preprocess -> model -> threshold,
    send real traffic and show what happened (about a minute)."""
    from examples.demo import run_demo

    run_demo(console, n_requests=requests)


# --- workspaces ---------------------------------------------------------------------------------
@ws_app.command("create")
def ws_create(name: str) -> None:
    """Create a workspace (admin token)."""
    _run(_client().create_workspace, name)
    console.print(f"created workspace [bold]{name}[/bold]")


@ws_app.command("list")
def ws_list() -> None:
    """List the workspaces your token can see."""
    for name in _run(_client().workspaces):
        console.print(name)


@ws_app.command("token")
def ws_token(
    role: str = typer.Argument(..., help="viewer | editor | owner"),
    expires_in: str = typer.Option(None, "--expires-in", help="lifetime: seconds, or like 12h, 30d (default never)"),
    workspace: str = WorkspaceOpt,
) -> None:
    """Create a token with ROLE in a workspace (owner or admin). It is shown once: keep it.

    Its id (for `corral workspaces tokens revoke`) and expiry go to stderr, the secret alone to stdout.
    """
    info = _run(_client(workspace).new_token, role, None, expires_in)
    err.print(f"token {info['id']} ({info['role']}, expires {info['expires_at'] or 'never'})")
    console.print(info["token"])


tokens_app = typer.Typer(help="List and revoke a workspace's tokens (owner).")
ws_app.add_typer(tokens_app, name="tokens")


@tokens_app.command("list")
def tokens_list(workspace: str = WorkspaceOpt) -> None:
    """The workspace's live tokens: id, role, created, expires (never the secrets)."""
    table = Table("id", "role", "created", "expires")
    for row in _run(_client(workspace).tokens):
        table.add_row(row["id"], row["role"], row["created_at"], row["expires_at"] or "never")
    console.print(table)


@tokens_app.command("revoke")
def tokens_revoke(
    token_id: str = typer.Argument(..., help="the id `tokens list` shows"), workspace: str = WorkspaceOpt
) -> None:
    """Revoke a token: it gets 401 everywhere (control API and pipelines) within a second."""
    _run(_client(workspace).revoke_token, token_id)
    console.print(f"revoked token {token_id}")


@app.command("audit")
def audit(
    start: str = typer.Option(None, help="ISO 8601 time (default: 7 days before end)"),
    end: str = typer.Option(None, help="ISO 8601 time (default now)"),
    limit: int = typer.Option(100, min=1, help="at most this many rows, newest first"),
    http: bool = typer.Option(False, "--http", help="show each change's HTTP method and path, not action and target"),
    workspace: str = WorkspaceOpt,
) -> None:
    """Who changed what in a workspace, and how it ended (owner): one row per control-plane change,
    an action such as pipeline.deploy on a target such as the pipeline's name."""
    # A path beside the action and target would leave it a dozen columns of a 120-column terminal: --http
    # shows it in their place, in the same order of rows.
    what = ("method", "path") if http else ("action", "target")
    table = Table()
    for column in ("time (UTC)", "token", "role", *what, "status"):
        table.add_column(column, overflow="fold", no_wrap=column not in ("target", "path"))
    for row in _run(_client(workspace).audit, workspace, start, end, limit):
        time = row["time"].split(".")[0].removesuffix("Z").replace("T", " ")  # to the second
        cells = [row.get(field) or "-" for field in ("token_id", "role", *what)]
        table.add_row(time, *cells, str(row["status"]))
    console.print(table)


# --- models and code ------------------------------------------------------------------------------
@models_app.command("upload")
def models_upload(
    name: str,
    file: Path = typer.Argument(
        ..., exists=True, help=".onnx, XGBoost .json/.ubj, LightGBM .txt, sklearn .pkl/.joblib"
    ),
    n_features: int = typer.Option(None, help="number of input features, if the file does not say"),
    trust_pickle: bool = typer.Option(False, help="load a .pkl/.joblib (runs its code: only your own files)"),
    workspace: str = WorkspaceOpt,
) -> None:
    """Upload a model as a new version of NAME (converted to ONNX here first when needed)."""
    from corral.model_files import load_model_file

    model = _run(load_model_file, file, trust_pickle=trust_pickle)
    info = _run(_client(workspace).upload_model, name, model, n_features=n_features)
    console.print(f"uploaded [bold]{info['name']}:{info['version']}[/bold] sha256 {info['sha256'][:12]}")
    for kind in ("inputs", "outputs"):
        for t in info[kind]:
            console.print(f"  {kind[:-1]:6} {t['name']:20} {t['datatype']:6} {t['shape']}")


@models_app.command("list")
def models_list(workspace: str = WorkspaceOpt) -> None:
    """List models (latest version of each)."""
    table = Table("name", "version", "sha256", "inputs", "outputs")
    for m in _run(_client(workspace).models):
        table.add_row(m["name"], str(m["version"]), m["sha256"][:12], _sig(m["inputs"]), _sig(m["outputs"]))
    console.print(table)


@code_app.command("upload")
def code_upload(name: str, file: Path = typer.Argument(..., exists=True), workspace: str = WorkspaceOpt) -> None:
    """Upload step code (editor): name it in a step as `code: NAME:VERSION`."""
    info = _run(_client(workspace).upload_code, name, file)
    console.print(f"uploaded code [bold]{info['name']}:{info['version']}[/bold] modules {info['modules']}")


# --- reference datasets -------------------------------------------------------------------------
@datasets_app.command("upload")
def datasets_upload(
    name: str,
    file: Path = typer.Argument(..., exists=True, help=".parquet, .csv (header row), .arrow/.feather, .json (records)"),
    workspace: str = WorkspaceOpt,
) -> None:
    """Upload FILE as a new version of dataset NAME (editor); identical values keep the latest version."""
    info = _run(_client(workspace).upload_dataset, name, file)
    console.print(f"uploaded dataset [bold]{info['name']}:{info['version']}[/bold] "
                  f"{info['rows']} rows sha256 {info['sha256'][:12]}")
    for column in info["columns"]:
        console.print(f"  column {column['name']:20} {column['type']}")


@datasets_app.command("list")
def datasets_list(workspace: str = WorkspaceOpt) -> None:
    """List datasets (latest version of each)."""
    table = Table("name", "version", "rows", "sha256", "columns")
    for d in _run(_client(workspace).datasets):
        columns = ", ".join(c["name"] for c in d["columns"])
        table.add_row(d["name"], str(d["version"]), str(d["rows"]), d["sha256"][:12], columns)
    console.print(table)


# --- pipelines ----------------------------------------------------------------------------------
@pipelines_app.command("apply")
def pipelines_apply(
    name: str,
    spec: Path = typer.Argument(..., exists=True, help="spec file, YAML or JSON"),
    workspace: str = WorkspaceOpt,
) -> None:
    """Store SPEC as a new version of pipeline NAME (no new version if it is unchanged)."""
    version = _run(_client(workspace).pipeline(name).apply, spec.read_text())
    console.print(f"pipeline [bold]{name}[/bold] version {version}")


@pipelines_app.command("deploy")
def pipelines_deploy(
    name: str,
    version: int = typer.Option(None, help="an older version rolls back"),
    workspace: str = WorkspaceOpt,
) -> None:
    """Deploy NAME (latest version, or --version) and wait until it serves."""
    with console.status(f"deploying {name} (starting replicas)…"):
        info = _run(_client(workspace).deploy, name, version)
    console.print(f"[green]{name} version {info['version']} is {info['status']}[/green]")
    console.print(f"  POST {_client(workspace).url}/ws/{workspace}/v2/models/{name}/infer")


@pipelines_app.command("undeploy")
def pipelines_undeploy(name: str, workspace: str = WorkspaceOpt) -> None:
    """Stop serving NAME (its versions stay in the registry)."""
    _run(_client(workspace).undeploy, name)
    console.print(f"{name} undeployed")


@pipelines_app.command("list")
def pipelines_list(workspace: str = WorkspaceOpt) -> None:
    """List pipelines with their latest and deployed versions."""
    _print_pipelines(_run(_client(workspace).pipelines), workspace)


@pipelines_app.command("versions")
def pipelines_versions(name: str, workspace: str = WorkspaceOpt) -> None:
    """List the versions of NAME."""
    table = Table("version", "created", "variants")
    for v in _run(_client(workspace).pipeline(name).versions):
        table.add_row(str(v["version"]), v["created_at"][:19], ", ".join(v["spec"]["variants"]))
    console.print(table)


@pipelines_app.command("show")
def pipelines_show(name: str, workspace: str = WorkspaceOpt) -> None:
    """Show NAME's spec, status and traffic as JSON."""
    console.print_json(json.dumps(_run(_client(workspace).pipeline(name).status)))


@pipelines_app.command("swap")
def pipelines_swap(
    name: str,
    step: str = typer.Argument(..., help="the model step to swap, e.g. model"),
    model: str = typer.Argument(..., help="the new model, name:version"),
    variant: str = typer.Option("main", help="the variant the step belongs to"),
    workspace: str = WorkspaceOpt,
) -> None:
    """Hot-swap the model of a running step (same inputs and outputs); requests in flight finish on
    the old model. Makes a new pipeline version, so `deploy --version` of the old one rolls back.

    Example: corral pipelines swap fraud model fraud:2 --variant challenger
    """
    with console.status(f"loading {model} into {name}/{variant}.{step}…"):
        info = _run(_client(workspace).pipeline(name).swap_model, step, model, variant=variant)
    console.print(f"[green]{name} now runs {info['model']} in {variant}.{step} (version {info['version']})[/green]")


# --- traffic ------------------------------------------------------------------------------------
def _parse_weights(pairs: list[str]) -> dict[str, float]:
    weights = {}
    for pair in pairs:
        variant, sep, number = pair.partition("=")
        try:
            weights[variant] = float(number)
        except ValueError:
            sep = ""
        if not sep or not variant:
            raise typer.BadParameter(f"{pair!r} is not VARIANT=WEIGHT; write e.g. control=90 challenger=10")
    return weights


@traffic_app.command("set")
def traffic_set(
    name: str,
    weights: list[str] = typer.Argument(..., help="VARIANT=WEIGHT pairs; weights are relative (90/10 = 9/1)"),
    key: str = typer.Option(None, help="split by this input column: a key always reaches the same variant"),
    shadow: list[str] = typer.Option([], help="mirror every request to this variant too (repeatable)"),
    workspace: str = WorkspaceOpt,
) -> None:
    """Set the live split of NAME, e.g. a 10% canary with a shadow:

    corral traffic set fraud control=90 challenger=10 --key customer_id --shadow v3
    """
    parsed = _parse_weights(weights)
    with console.status("updating the routers…"):
        info = _run(_client(workspace).pipeline(name).set_traffic, parsed, key=key, shadows=shadow)
    _print_traffic(name, info["traffic"])


@traffic_app.command("show")
def traffic_show(name: str, workspace: str = WorkspaceOpt) -> None:
    """Show the live split of NAME: weights as shares, split key, shadows."""
    _print_traffic(name, _run(_client(workspace).pipeline(name).traffic))


def _print_traffic(name: str, traffic: dict[str, Any]) -> None:
    total = sum(traffic["weights"].values()) or 1
    table = Table("variant", "weight", "share", title=f"traffic of {name}")
    for variant, weight in traffic["weights"].items():
        table.add_row(variant, f"{weight:g}", f"{100 * weight / total:.1f}%")
    for variant in traffic.get("shadows") or []:
        table.add_row(variant, "shadow", "mirror")
    console.print(table)
    console.print(f"split key: {traffic.get('key') or 'none (random by weight)'}")


@app.command()
def infer(
    name: str,
    file: Path = typer.Argument(..., exists=True, help=".json (V2 or records), .csv, .parquet, .arrow/.feather"),
    output: Path = typer.Option(None, "--output", "-o", help="write results here (.csv, .parquet, .json)"),
    workspace: str = WorkspaceOpt,
) -> None:
    """Send FILE to pipeline NAME and print (or save) the result."""
    import pandas as pd
    import pyarrow as pa

    data = _run(_read_input, file)
    result = _run(_client(workspace).infer, name, data)
    if isinstance(result, dict):
        console.print_json(json.dumps(result))
        return
    frame = result.to_pandas() if isinstance(result, pa.Table) else pd.DataFrame(result)
    if output:
        _write_output(frame, output)
        console.print(f"wrote {len(frame)} rows to {output}")
    else:
        console.print(frame.to_string(max_rows=50))


@app.command()
def batch(
    name: str,
    inputs: list[str] = typer.Argument(
        ..., help="Parquet, CSV (with a header) or JSON-lines files, directories of them, or URIs such as s3://b/p"
    ),
    output: str = typer.Option(..., "--output", "-o", help="a new or empty directory for the Parquet results"),
    version: int = typer.Option(None, "--version", help="pipeline version (default: the deployed one)"),
    variant: str = typer.Option(None, "--variant", help="variant to run (default: the one with most traffic)"),
    log: bool = typer.Option(False, "--log", help="also write every row to the inference log"),
    workers: int = typer.Option(2, "--workers", min=1, help="Ray Data actors running the steps"),
    workspace: str = WorkspaceOpt,
) -> None:
    """Run pipeline NAME over files on the cluster (Ray Data), the same steps as online, Parquet out.

    `corral batch fraud data/ --output scored/` reads every .parquet/.csv/.jsonl file under data/ and
    writes Parquet files with the input columns and the pipeline's output columns (the online reply's
    names) under scored/. Local paths are read and written by the cluster's nodes (this machine for a
    local Corral); use s3:// URIs for a remote cluster. Rows are not logged unless --log.
    """
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from cluster.sdk import BatchFailed

    pipeline = _client(workspace).pipeline(name)
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[rate]}"))
    bar = Progress(*columns, TimeElapsedColumn(), console=console)
    task = bar.add_task(f"{name}: rows", total=None, rate="", start=False)

    def show(report: dict[str, Any]) -> None:  # the bar appears once the run has started
        if not bar.live.is_started:
            bar.start()
            bar.start_task(task)
        rate = f"{report['rows_per_s']:,.0f} rows/s" if report["rows"] else "starting Ray Data…"
        bar.update(task, completed=report["rows"], total=report.get("rows_total"), rate=rate)

    try:
        result = _run(pipeline.batch, inputs, output, version, variant, log=log, workers=workers, progress=show)
    except BatchFailed as exc:
        bar.stop()
        _fail(exc)
    bar.stop()
    console.print(
        f"[green]{result.rows:,} rows[/green] from {result.files} file(s) in {result.seconds:.1f} s "
        f"({result.rows_per_s:,.0f} rows/s): version {result.version}, variant {result.variant} -> {result.output}"
    )


@app.command()
def logs(
    name: str,
    since: str = typer.Option("1h", help="how far back: a duration (30s, 10m, 1h, 1d) or an ISO 8601 time"),
    until: str = typer.Option(None, help="end of the range (ISO 8601); default now"),
    limit: int = typer.Option(50, help="show the newest LIMIT rows of the range, oldest first"),
    output: Path = typer.Option(None, "--output", "-o", help="save all columns to .csv, .parquet or .json"),
    inputs: bool = typer.Option(False, "--inputs", help="also show the in.* columns"),
    workspace: str = WorkspaceOpt,
) -> None:
    """Show the inference log of pipeline NAME: inputs, outputs, variant, anomalies, latency.

    Example: `corral logs fraud --since 10m --limit 20`, or `-o last-day.parquet --since 1d --limit 1000000`.
    """
    start = _run(_since, since, until)
    frame = _run(_client(workspace).pipeline(name).logs, start=start, end=until, limit=limit)
    if output:
        _write_output(frame, output)
        console.print(f"wrote {len(frame)} log rows to {output}")
        return
    if frame.empty:
        console.print(f"no log rows for {name} since {start}: send it traffic, or widen --since")
        return
    shown = [c for c in frame.columns if not c.startswith("in.") or inputs]
    table = Table(*[_header(c) for c in shown], title=f"log of {name}")
    for row in frame[shown].itertuples(index=False):
        table.add_row(*[_cell(column, value) for column, value in zip(shown, row, strict=True)])
    console.print(table)
    hidden = "" if inputs else " (inputs hidden: --inputs)"
    console.print(f"[dim]{len(frame)} rows{hidden}; every column with --output FILE[/dim]")


@app.command()
def explain(
    name: str,
    method: str = typer.Option(
        ...,
        "--method",
        "-m",
        help="anchors | kernel_shap (local with --row/--rows, else global) | permutation | ale | pd",
    ),
    row: str = typer.Option(None, "--row", help="one row to explain, as JSON: '{\"amount\": 120, ...}'"),
    rows: Path = typer.Option(
        None, "--rows", help="rows to explain (or, for permutation, to shuffle): .csv/.parquet/.json/.arrow"
    ),
    labels: str = typer.Option(
        None, "--labels", help="permutation: true labels, a JSON list or a file with one per line"
    ),
    since: str = typer.Option(
        None, "--since", help="reference: logged inputs since (1h, 1d or ISO time); default the last day"
    ),
    dataset: str = typer.Option(None, "--dataset", help="reference: an uploaded dataset, name[:version]"),
    reference_file: Path = typer.Option(None, "--reference", help="reference: rows from a .csv/.parquet/.json file"),
    param: list[str] = typer.Option(
        [], "--param", "-p", help="method option key=value, repeatable: threshold=0.9, nsamples=500, features=[\"f3\"]"
    ),
    timeout: float = typer.Option(None, "--timeout", help="time budget in seconds (server default 120)"),
    chart: Path = typer.Option(None, "--chart", help="also save the chart as a PNG"),
    output: Path = typer.Option(None, "--output", "-o", help="also save the explanation as JSON"),
    workspace: str = WorkspaceOpt,
) -> None:
    """Explain pipeline NAME's predictions, treating the whole pipeline (pre-processing included) as a black box.

    Local: `corral explain fraud -m anchors --row '{"amount": 900, "age": 22, "n_tx": 1, "hour": 3,
    "merchant_risk": 0.9, "distance_km": 40}' --chart why.png` (a row has every input column).
    Global: `corral explain fraud -m kernel_shap --since 1d`, `-m ale --param features='["amount"]'`,
    `-m permutation --rows labelled.csv --labels labels.json`. The reference (background) data is the
    last day of logged inputs unless --since, --dataset or --reference says otherwise.
    """
    import threading

    from cluster import explain_view

    params = _run(explain_view.parse_params, param)
    if timeout is not None:
        params["timeout_s"] = timeout
    if row and rows:
        _fail(ValueError("give --row or --rows, not both"))
    instances = _run(explain_view.parse_row, row) if row else _run(_read_input, rows) if rows else None
    reference: Any = None
    if sum(x is not None for x in (since, dataset, reference_file)) > 1:
        _fail(ValueError("choose one reference: --since, --dataset or --reference"))
    if since:
        reference = {"start": _run(_since, since, None)}
    elif dataset:
        reference = dataset
    elif reference_file:
        reference = _run(_read_input, reference_file)
    label_list = _run(_read_labels, labels) if labels else None
    pipeline = _client(workspace).pipeline(name)
    outcome: dict[str, Any] = {}

    def work() -> None:
        try:
            outcome["result"] = pipeline.explain(method, instances, reference=reference, labels=label_list, **params)
        except Exception as exc:  # reported on the main thread, like any other CLI error
            outcome["error"] = exc

    worker = threading.Thread(target=work, daemon=True)
    worker.start()
    with console.status(f"{method}: starting the explainer…") as status:
        while worker.is_alive():
            worker.join(1.0)
            status.update(_explain_status(method, pipeline))
    if "error" in outcome:
        _run(_raise, outcome["error"])
    explanation = outcome["result"]
    for part in explain_view.render(explanation):
        console.print(part)
    if chart:
        explanation.chart(chart)
        console.print(f"chart saved to {chart}")
    if output:
        output.write_text(explanation.model_dump_json(indent=2))
        console.print(f"explanation saved to {output}")


def _explain_status(method: str, pipeline: Any) -> str:
    try:
        running = pipeline.explain_progress()
    except Exception:  # progress is a courtesy: never fail the explanation over it
        return f"{method}: explaining…"
    if not running:
        return f"{method}: waiting for the explainer (a cold start imports alibi)…"
    job = max(running, key=lambda j: j["elapsed_s"])
    return (
        f"{method}: {job['stage']} · {job['predict_calls']} predict calls, {job['rows_predicted']:,} rows · "
        f"{job['elapsed_s']:.0f}/{job['budget_s']:.0f} s"
    )


def _label(text: str) -> Any:
    """One label per line: a JSON value when it parses (1, true, "x"), else the text itself."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def _raise(exc: Exception) -> None:
    raise exc


def _read_labels(labels: str) -> list[Any]:
    path = Path(labels)
    if path.exists():
        text = path.read_text()
        try:
            parsed = json.loads(text)
        except json.JSONDecodeError:
            return [_label(line.strip()) for line in text.splitlines() if line.strip()]
        return list(parsed)
    try:
        parsed = json.loads(labels)
    except json.JSONDecodeError:
        raise ValueError("--labels takes a JSON list ('[0, 1, 1]') or a file with one label per line") from None
    if not isinstance(parsed, list):
        raise ValueError("--labels takes a JSON list ('[0, 1, 1]') or a file with one label per line")
    return parsed


SHORT_HEADERS = {"pipeline_version": "ver", "request_id": "request", "latency_ms": "ms", "anomaly.count": "anomalies"}


def _header(column: str) -> str:
    return SHORT_HEADERS.get(column, column.removeprefix("out."))


def _cell(column: str, value: Any) -> str:
    if column == "time":
        return str(value)[11:23]  # HH:MM:SS.mmm: the date is in the query
    if column == "request_id":
        return str(value)[:8]
    if isinstance(value, float):
        return f"{value:.4g}"
    if hasattr(value, "__len__") and not isinstance(value, str):
        return "[" + ", ".join(f"{v:.3g}" if isinstance(v, float) else str(v) for v in value) + "]"
    return str(value)


def _since(since: str, until: str | None) -> str:
    """`--since` as an ISO 8601 start time: a duration counts back from --until (or now)."""
    from datetime import UTC, datetime, timedelta

    from monitoring.assay_spec import parse_duration
    from monitoring.time_range import parse_instant
    from pipelines.errors import CorralError

    try:
        end = parse_instant(until, "--until") if until else datetime.now(UTC)
        try:
            seconds = parse_duration(since)
        except CorralError:
            return parse_instant(since, "--since").isoformat()
    except CorralError as exc:
        raise ValueError(f"{exc.message} (--since takes a duration such as 1h, or an ISO 8601 time)") from None
    return (end - timedelta(seconds=seconds)).isoformat()


# --- assays -------------------------------------------------------------------------------------
@assays_app.command("apply")
def assays_apply(
    name: str,
    file: Path = typer.Argument(..., exists=True, help="assay spec, YAML or JSON"),
    workspace: str = WorkspaceOpt,
) -> None:
    """Create or change assay NAME from FILE. Example spec:

    pipeline: fraud\n
    target: out.probability\n
    baseline: {start: 2026-11-23T00:00:00Z, end: 2026-11-23T12:00:00Z}\n
    window: {width: 1h, interval: 1h}\n
    metric: psi\n
    thresholds: {warning: 0.1, alert: 0.25}
    """
    import yaml

    spec = _run(lambda: yaml.safe_load(file.read_text()))
    described = _run(_client(workspace).assay(name).apply, spec)
    console.print(f"assay [bold]{name}[/bold] watches {spec.get('target')} of {spec.get('pipeline')}; "
                  f"next window starts {described['next_window_start']}")


@assays_app.command("list")
def assays_list(workspace: str = WorkspaceOpt) -> None:
    """List the assays of a workspace."""
    table = Table("assay", "pipeline", "target", "metric", "window", "active", title=f"workspace {workspace}")
    for row in _run(_client(workspace).assays):
        spec = row["spec"]
        window = f"{spec['window']['width']:g} s every {spec['window']['interval']:g} s"
        table.add_row(row["name"], spec["pipeline"], spec["target"], spec["metric"], window, str(spec["active"]))
    console.print(table)


def _print_windows(frame: Any, title: str) -> None:
    colours = {"ok": "green", "warning": "yellow", "alert": "red"}
    table = Table("window start", "window end", "rows", "score", "status", title=title)
    for row in frame.itertuples():
        score = "-" if row.score is None or row.score != row.score else f"{row.score:.4f}"
        status = f"[{colours.get(row.status, 'white')}]{row.status}[/]"
        table.add_row(str(row.window_start), str(row.window_end), str(row.rows), score, status)
    console.print(table)


@assays_app.command("preview")
def assays_preview(
    name: str,
    since: str = typer.Option("1d", help="a duration back from --until (1h, 1d) or an ISO 8601 time"),
    until: str = typer.Option(None, help="end of the range (ISO 8601); default now"),
    workspace: str = WorkspaceOpt,
) -> None:
    """Run assay NAME over logged history now, without storing anything (try thresholds before alerting)."""
    start = _run(_since, since, until)
    frame = _run(_client(workspace).assay(name).preview, start=start, end=until)
    _print_windows(frame, f"preview of {name}")


@assays_app.command("results")
def assays_results(
    name: str,
    since: str = typer.Option("30d", help="a duration back from --until or an ISO 8601 time"),
    until: str = typer.Option(None, help="end of the range (ISO 8601); default now"),
    workspace: str = WorkspaceOpt,
) -> None:
    """Show the stored windows of assay NAME."""
    start = _run(_since, since, until)
    frame = _run(_client(workspace).assay(name).results, start=start, end=until)
    _print_windows(frame, f"results of {name}")


@assays_app.command("chart")
def assays_chart(
    name: str,
    output: Path = typer.Option(Path("assay.png"), "--output", "-o", help="PNG file to write"),
    since: str = typer.Option("30d", help="a duration back from --until or an ISO 8601 time"),
    until: str = typer.Option(None, help="end of the range (ISO 8601); default now"),
    preview: bool = typer.Option(False, help="chart a preview over logged history instead of stored results"),
    workspace: str = WorkspaceOpt,
) -> None:
    """Save a PNG of assay NAME: baseline vs latest window histogram, and the score over time."""
    start = _run(_since, since, until)
    _run(_client(workspace).assay(name).chart, output, start=start, end=until, preview=preview)
    console.print(f"wrote {output}")


def _read_input(path: Path) -> Any:
    import pandas as pd
    import pyarrow as pa
    import pyarrow.feather as feather

    suffix = path.suffix.lower()
    if suffix == ".json":
        data = json.loads(path.read_text())
        return data if isinstance(data, dict) else pd.DataFrame.from_records(data)
    if suffix == ".csv":
        return pd.read_csv(path)
    if suffix == ".parquet":
        return pd.read_parquet(path)
    if suffix in (".arrow", ".feather", ".ipc"):
        table: pa.Table = feather.read_table(path)
        return table
    raise ValueError(f"cannot read {path.name}: use .json, .csv, .parquet or .arrow")


def _write_output(frame: Any, path: Path) -> None:
    suffix = path.suffix.lower()
    if suffix == ".csv":
        frame.to_csv(path, index=False)
    elif suffix == ".parquet":
        frame.to_parquet(path)
    else:
        frame.to_json(path, orient="records")


def _sig(tensors: list[dict[str, Any]]) -> str:
    return ", ".join(f"{t['name']}{t['shape']}" for t in tensors)


def _print_pipelines(rows: list[dict[str, Any]], workspace: str) -> None:
    table = Table("pipeline", "latest", "deployed", "status", title=f"workspace {workspace}")
    for p in rows:
        table.add_row(p["name"], str(p["version"]), str(p.get("deployed_version") or "-"), p.get("status", ""))
    console.print(table)


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)
