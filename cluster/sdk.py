"""Python SDK: `corral.Client(url, token)` for data scientists, over the public HTTP API."""

from __future__ import annotations

import io
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import orjson
import pyarrow as pa

from cluster.settings import CorralSettings
from explain.explanation import Explanation
from pipelines.codecs.arrow import FILE_TYPE, STREAM_TYPE
from pipelines.datasets import CSV_TYPE, JSON_TYPE, PARQUET_TYPE

if TYPE_CHECKING:
    import pandas as pd

ARROW_STREAM = STREAM_TYPE
ARROW_FILE = FILE_TYPE


class CorralAPIError(RuntimeError):
    """An error reply from Corral: `status` is the HTTP status, `message` says what to fix."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"{status}: {message}")
        self.status = status
        self.message = message


class BatchFailed(RuntimeError):
    """A batch run that stopped with an error (a step raised, an input could not be read)."""


@dataclass(frozen=True)
class BatchResult:
    """What a finished batch run did: rows and input files read, seconds, rows per second."""

    id: str
    output: str
    version: int
    variant: str
    rows: int
    files: int
    seconds: float
    rows_per_s: float


def _uri(path: str | Path) -> str:
    """A URI as given; a local path made absolute (the cluster reads it)."""
    text = str(path)
    return text if "://" in text else str(Path(text).expanduser().resolve())


class Client:
    """A connection to Corral, scoped to one workspace (default `default`).

    `token` defaults to $CORRAL_TOKEN, then the admin token file written by `corral up`.
    """

    def __init__(
        self,
        url: str | None = None,
        token: str | None = None,
        workspace: str = "default",
        timeout: float = 600,
    ) -> None:
        settings = CorralSettings()
        self.url = (url or settings.base_url).rstrip("/")
        if token is None:
            token = settings.token
        if token is None and settings.admin_token_path.exists():
            token = settings.admin_token_path.read_text().strip()
        self.workspace = workspace
        self._http = httpx.Client(
            base_url=self.url, headers={"authorization": f"Bearer {token}"} if token else {}, timeout=timeout
        )

    # --- plumbing ---------------------------------------------------------------------------------
    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        reply = self._http.request(method, path, **kwargs)
        if reply.status_code >= 400:
            try:
                message = reply.json().get("error", reply.text)
            except ValueError:
                message = reply.text
            raise CorralAPIError(reply.status_code, message)
        return reply

    def _ws(self, workspace: str | None = None) -> str:
        return f"/api/v1/workspaces/{workspace or self.workspace}"

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *_: Any) -> None:
        self.close()

    # --- workspaces and tokens ----------------------------------------------------------------
    def create_workspace(self, name: str) -> dict[str, Any]:
        return self.request("POST", "/api/v1/workspaces", json={"name": name}).json()  # type: ignore[no-any-return]

    def workspaces(self) -> list[str]:
        return [w["name"] for w in self.request("GET", "/api/v1/workspaces").json()]

    def create_token(self, role: str, workspace: str | None = None, expires_in: str | float | None = None) -> str:
        """A new token's secret (shown once). `expires_in`: seconds, or text like '12h', '30d'."""
        return self.new_token(role, workspace, expires_in)["token"]  # type: ignore[no-any-return]

    def new_token(
        self, role: str, workspace: str | None = None, expires_in: str | float | None = None
    ) -> dict[str, Any]:
        """A new token as `{id, token, role, expires_at}`."""
        body: dict[str, Any] = {"role": role} | ({"expires_in": expires_in} if expires_in is not None else {})
        return self.request("POST", f"{self._ws(workspace)}/tokens", json=body).json()  # type: ignore[no-any-return]

    def tokens(self, workspace: str | None = None) -> list[dict[str, Any]]:
        """The workspace's live tokens: `{id, role, created_at, expires_at}` each (owner)."""
        return self.request("GET", f"{self._ws(workspace)}/tokens").json()  # type: ignore[no-any-return]

    def revoke_token(self, token_id: str, workspace: str | None = None) -> None:
        """Revoke a token by its id: it answers 401 everywhere within 1 s (owner)."""
        self.request("DELETE", f"{self._ws(workspace)}/tokens/{token_id}")

    def audit(
        self, workspace: str | None = None, start: str | None = None, end: str | None = None, limit: int = 1000
    ) -> list[dict[str, Any]]:
        """Control-plane changes, newest first (owner): `{time, token_id, role, action, target, status,
        method, path}`, `action` a verb on a noun such as `pipeline.deploy`, `target` the object's name."""
        params: dict[str, Any] = {"limit": limit} | {k: v for k, v in (("start", start), ("end", end)) if v}
        return self.request("GET", f"{self._ws(workspace)}/audit", params=params).json()  # type: ignore[no-any-return]

    # --- models and code ----------------------------------------------------------------------
    def upload_model(
        self, name: str, model: Any, *, n_features: int | None = None, sample: Any = None
    ) -> dict[str, Any]:
        """Upload an ONNX model (bytes, path, ModelProto) or a scikit-learn/XGBoost/LightGBM model,
        converted to ONNX here on the client. Returns `{name, version, sha256, inputs, outputs}`."""
        from cluster.convert import to_onnx

        data = to_onnx(model, n_features=n_features, sample=sample)
        files = {"file": (f"{name}.onnx", data, "application/octet-stream")}
        return self.request("POST", f"{self._ws()}/models", data={"name": name}, files=files).json()  # type: ignore[no-any-return]

    def models(self) -> list[dict[str, Any]]:
        return self.request("GET", f"{self._ws()}/models").json()  # type: ignore[no-any-return]

    def model_versions(self, name: str) -> list[dict[str, Any]]:
        return self.request("GET", f"{self._ws()}/models/{name}").json()  # type: ignore[no-any-return]

    def upload_code(self, name: str, path: str | Path) -> dict[str, Any]:
        """Upload step code: a `.py` module or a `.zip` package; name it in a step's `code:`."""
        path = Path(path)
        files = {"file": (path.name, path.read_bytes(), "application/octet-stream")}
        return self.request("POST", f"{self._ws()}/code", data={"name": name}, files=files).json()  # type: ignore[no-any-return]

    # --- reference datasets -------------------------------------------------------------------
    def upload_dataset(self, name: str, data: pd.DataFrame | pa.Table | str | Path) -> dict[str, Any]:
        """Upload reference data (e.g. for explanations): a DataFrame, pyarrow.Table, or a .parquet,
        .csv, .arrow/.feather or .json (records) file. Identical values keep the latest version.
        Returns `{name, version, rows, columns, sha256}`."""
        body, content_type = _dataset_body(data)
        reply = self.request(
            "PUT", f"{self._ws()}/datasets/{name}", content=body, headers={"content-type": content_type}
        )
        return reply.json()  # type: ignore[no-any-return]

    def datasets(self) -> list[dict[str, Any]]:
        """The latest version of each dataset in the workspace."""
        return self.request("GET", f"{self._ws()}/datasets").json()  # type: ignore[no-any-return]

    def dataset_versions(self, name: str) -> list[dict[str, Any]]:
        """Every version of dataset `name`, oldest first."""
        return self.request("GET", f"{self._ws()}/datasets/{name}").json()  # type: ignore[no-any-return]

    # --- pipelines ----------------------------------------------------------------------------
    def pipeline(self, name: str, spec: dict[str, Any] | None = None) -> Pipeline:
        """A handle on pipeline `name`; with `spec`, the spec is applied (a new version if it changed)."""
        pipeline = Pipeline(self, name)
        if spec is not None:
            pipeline.apply(spec)
        return pipeline

    def pipelines(self) -> list[dict[str, Any]]:
        return self.request("GET", f"{self._ws()}/pipelines").json()  # type: ignore[no-any-return]

    def deploy(self, name: str, version: int | None = None) -> dict[str, Any]:
        return Pipeline(self, name).deploy(version)

    def undeploy(self, name: str) -> dict[str, Any]:
        return Pipeline(self, name).undeploy()

    def assay(self, name: str, spec: dict[str, Any] | None = None) -> Assay:
        """A drift assay by name; with `spec` (the assay spec as a dict) it is applied first."""
        assay = Assay(self, name)
        if spec is not None:
            assay.apply(spec)
        return assay

    def assays(self) -> list[dict[str, Any]]:
        return self.request("GET", f"{self._ws()}/assays").json()  # type: ignore[no-any-return]

    def infer(self, name: str, data: Any, split_key: str | None = None) -> Any:
        return Pipeline(self, name).infer(data, split_key=split_key)

    def status(self) -> dict[str, Any]:
        return {"url": self.url, "workspace": self.workspace, "pipelines": self.pipelines()}


class Pipeline:
    """A pipeline in the client's workspace. Build it step by step, or apply a whole spec."""

    def __init__(self, client: Client, name: str) -> None:
        self.client = client
        self.name = name
        self._draft: dict[str, Any] = {"variants": {}}

    @property
    def _path(self) -> str:
        return f"{self.client._ws()}/pipelines/{self.name}"

    def add_step(
        self,
        name: str,
        *,
        python: str | None = None,
        model: str | None = None,
        variant: str = "main",
        **options: Any,
    ) -> Pipeline:
        """Append a step to a variant of the draft spec (then `apply()`); options as in the spec."""
        step = {
            "name": name,
            **({"python": python} if python else {}),
            **({"model": model} if model else {}),
            **options,
        }
        self._draft["variants"].setdefault(variant, {"steps": []})["steps"].append(step)
        return self

    def apply(self, spec: dict[str, Any] | str | None = None) -> int:
        """Store `spec` (a dict, or YAML text), or the draft built with add_step; returns the version."""
        if isinstance(spec, str):
            reply = self.client.request("PUT", self._path, content=spec, headers={"content-type": "application/yaml"})
        else:
            reply = self.client.request("PUT", self._path, json=spec if spec is not None else self._draft)
        return int(reply.json()["version"])

    def deploy(self, version: int | None = None, *, timeout_s: float | None = None) -> dict[str, Any]:
        """Deploy the latest version (or `version`: an older one rolls back); returns once it serves.
        Past `timeout_s` (default: the server's CORRAL_DEPLOY_TIMEOUT_S, at most 600 s) a 503 says why
        it did not start, e.g. the resources the cluster lacks, and the old version keeps serving; one
        that cannot fit when no autoscaler can add the node is that 503 at once."""
        body = {"version": version} if version is not None else {}
        headers = {"x-corral-timeout-ms": str(max(1, int(timeout_s * 1000)))} if timeout_s is not None else {}
        path = f"{self._path}/deploy"
        return self.client.request("POST", path, json=body, headers=headers).json()  # type: ignore[no-any-return]

    def undeploy(self) -> dict[str, Any]:
        return self.client.request("POST", f"{self._path}/undeploy").json()  # type: ignore[no-any-return]

    def status(self) -> dict[str, Any]:
        return self.client.request("GET", self._path).json()  # type: ignore[no-any-return]

    def versions(self) -> list[dict[str, Any]]:
        return self.client.request("GET", f"{self._path}/versions").json()  # type: ignore[no-any-return]

    def traffic(self) -> dict[str, Any]:
        """The live traffic: `{"version", "status", "weights", "key", "shadows"}`."""
        return self.client.request("GET", f"{self._path}/traffic").json()  # type: ignore[no-any-return]

    def set_traffic(
        self, weights: dict[str, float], *, key: str | None = None, shadows: list[str] | None = None
    ) -> dict[str, Any]:
        """Change the live split (e.g. a canary ramp {"control": 90, "challenger": 10}), the split key
        column and the shadow variants; returns once every router replica uses it. No restart."""
        body = {"weights": weights, "key": key, "shadows": shadows or []}
        return self.client.request("PUT", f"{self._path}/traffic", json=body).json()  # type: ignore[no-any-return]

    def swap_model(self, step: str, model: str, *, variant: str = "main") -> dict[str, Any]:
        """Hot-swap the model of `variant.step` for `model` ("name:version"): a new pipeline version,
        applied in place; requests in flight finish on the old model. Returns once swapped."""
        path = f"{self._path}/variants/{variant}/steps/{step}/model"
        return self.client.request("PUT", path, json={"model": model}).json()  # type: ignore[no-any-return]

    def infer(self, data: Any, split_key: str | None = None) -> Any:
        """Run the pipeline on a pandas.DataFrame, pyarrow.Table, dict of columns, or V2 request dict;
        the result comes back as the same type (Arrow on the wire, so dtypes survive)."""
        import pandas as pd

        url = f"/ws/{self.client.workspace}/v2/models/{self.name}/infer"
        headers = {"x-corral-split-key": split_key} if split_key else {}
        if isinstance(data, dict) and "inputs" in data:
            return self.client.request("POST", url, json=data, headers=headers).json()
        if isinstance(data, pd.DataFrame):
            table = pa.Table.from_pandas(data, preserve_index=False)
        elif isinstance(data, pa.Table):
            table = data
        elif isinstance(data, dict):
            table = pa.table(data)
        else:
            raise TypeError(f"infer() takes a DataFrame, pyarrow.Table or dict, not {type(data).__name__}")
        sink = io.BytesIO()
        with pa.ipc.new_stream(sink, table.schema) as writer:
            writer.write_table(table)
        reply = self.client.request(
            "POST", url, content=sink.getvalue(), headers={"content-type": ARROW_STREAM, **headers}
        )
        result = pa.ipc.open_stream(reply.content).read_all()
        if isinstance(data, pd.DataFrame):
            return result.to_pandas()
        if isinstance(data, dict):
            return result.to_pydict()
        return result

    def logs(
        self,
        start: datetime | str | None = None,
        end: datetime | str | None = None,
        limit: int = 1000,
    ) -> pd.DataFrame:
        """Inference log rows in [start, end) as a DataFrame: the newest `limit`, oldest first.

        Defaults: end = now, start = a day before end. Naive datetimes are UTC. Columns follow the
        log contract: time, request_id, pipeline_version, variant, in.*, out.*, shadow.*, anomaly.*,
        latency_ms.
        """
        params: dict[str, Any] = {"limit": limit, **_range(start, end)}
        reply = self.client.request(
            "GET", f"{self._path}/logs", params=params, headers={"accept": ARROW_FILE}
        )
        return pa.ipc.open_file(reply.content).read_all().to_pandas()

    def batch(
        self,
        inputs: str | Path | Sequence[str | Path],
        output: str | Path,
        version: int | None = None,
        variant: str | None = None,
        *,
        log: bool = False,
        workers: int = 2,
        batch_rows: int | None = None,
        progress: Callable[[dict[str, Any]], None] | None = None,
        poll_s: float = 0.5,
    ) -> BatchResult:
        """Run this pipeline's steps over files on the cluster's Ray Data and wait for the end.

        `inputs`: Parquet, CSV (with a header) or JSON-lines files, directories of them, or pyarrow.fs
        URIs (`s3://bucket/path`); local paths are read by the cluster's nodes. `output`: a new or empty
        directory that gets Parquet files with the input and output columns. Default version: the
        deployed one; default variant: the one with the most live traffic. `log=True` also writes the
        rows to the inference log. `workers` Ray Data actors run the steps on `batch_rows` rows at a
        time (default: a block, one input file or 128 MiB of it). `progress(report)` is called on
        every poll. Raises BatchFailed.
        """
        paths = [inputs] if isinstance(inputs, str | Path) else list(inputs)
        body: dict[str, Any] = {"inputs": [_uri(p) for p in paths], "output": _uri(output), "log": log}
        body["workers"] = workers
        if batch_rows is not None:
            body["batch_rows"] = batch_rows
        if version is not None:
            body["version"] = version
        if variant is not None:
            body["variant"] = variant
        started = self.client.request("POST", f"{self._path}/batch", json=body).json()
        while True:
            report: dict[str, Any] = self.client.request("GET", f"{self.client._ws()}/batch/{started['id']}").json()
            if progress is not None:
                progress(report)
            if report["state"] == "failed":
                raise BatchFailed(f"batch run {report['id']} of {self.name} failed: {report['error']}")
            if report["state"] == "succeeded":
                return BatchResult(**{name: report[name] for name in BatchResult.__dataclass_fields__})
            time.sleep(poll_s)

    def explain(
        self,
        method: str,
        instances: Any = None,
        *,
        reference: Any = None,
        labels: Any = None,
        **params: Any,
    ) -> Explanation:
        """Explain the deployed pipeline as a black box, pre-processing included.

        `method`: "anchors" or "kernel_shap" (local: pass `instances`), "kernel_shap", "permutation"
        (with `labels`), "ale" or "pd" (global). `instances`: a DataFrame, a list of records or one
        record. `reference`: rows (DataFrame or records), `(start, end)` of logged inputs, or an
        uploaded dataset's "name[:version]"; default the last day of logged inputs. `params`: method
        options such as `timeout_s`, `output`, `target`, `threshold`, `nsamples`, `features`.
        `explanation.chart("out.png")` draws it.
        """
        body: dict[str, Any] = {"method": method, "params": params}
        if instances is not None:
            body["instances"] = _records(instances)
        if reference is not None:
            body["reference"] = _reference(reference)
        if labels is not None:
            body["labels"] = list(labels)
        content = orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY)
        reply = self.client.request(
            "POST", f"{self._path}/explain", content=content, headers={"content-type": "application/json"}
        )
        return Explanation.model_validate(reply.json())

    def explain_progress(self) -> list[dict[str, Any]]:
        """Explanations of this pipeline running now: stage, elapsed_s, predict_calls, rows_predicted."""
        return self.client.request("GET", f"{self._path}/explain/progress").json()  # type: ignore[no-any-return]


class Assay:
    """A drift assay on one column of a pipeline's inference log (see the assay spec in the README)."""

    def __init__(self, client: Client, name: str) -> None:
        self.client = client
        self.name = name

    @property
    def _path(self) -> str:
        return f"{self.client._ws()}/assays/{self.name}"

    def apply(self, spec: dict[str, Any]) -> dict[str, Any]:
        """Create or change the assay; a changed spec starts its results over."""
        return self.client.request("PUT", self._path, json=spec).json()  # type: ignore[no-any-return]

    def status(self) -> dict[str, Any]:
        return self.client.request("GET", self._path).json()  # type: ignore[no-any-return]

    def pause(self) -> dict[str, Any]:
        """Stop scheduled runs (results so far are kept); `resume()` starts them again."""
        return self._set_active(False)

    def resume(self) -> dict[str, Any]:
        return self._set_active(True)

    def _set_active(self, active: bool) -> dict[str, Any]:
        spec = self.status()["spec"]
        spec["active"] = active
        return self.apply(spec)

    def delete(self) -> None:
        self.client.request("DELETE", self._path)

    def results(self, start: datetime | str | None = None, end: datetime | str | None = None) -> pd.DataFrame:
        """Stored windows (window_start, window_end, score, status, rows, bin_scores), oldest first."""
        reply = self.client.request("GET", f"{self._path}/results", params=_range(start, end))
        return _windows(reply.json())

    def preview(self, start: datetime | str | None = None, end: datetime | str | None = None) -> pd.DataFrame:
        """The windows over logged history in [start, end) (default the last day), computed now, not stored."""
        reply = self.client.request("POST", f"{self._path}/preview", json=_range(start, end))
        return _windows(reply.json())

    def chart(
        self,
        path: str | Path | None = None,
        *,
        start: datetime | str | None = None,
        end: datetime | str | None = None,
        preview: bool = False,
    ) -> bytes:
        """PNG of baseline vs latest window and of scores over time; also written to `path` if given."""
        params = {**_range(start, end), "preview": str(preview).lower()}
        png = self.client.request("GET", f"{self._path}/chart", params=params).content
        if path is not None:
            Path(path).write_bytes(png)
        return png


DATASET_FILE_TYPES = {
    ".parquet": PARQUET_TYPE,
    ".pq": PARQUET_TYPE,
    ".csv": CSV_TYPE,
    ".json": JSON_TYPE,
    ".arrow": ARROW_FILE,
    ".feather": ARROW_FILE,  # Feather v2 is the Arrow IPC file format
    ".ipc": ARROW_FILE,
}


def _dataset_body(data: Any) -> tuple[bytes, str]:
    """Request body and Content-Type: frames and tables as an Arrow IPC file (types survive exactly),
    files as their own bytes, so the server reads them the same way it reads curl uploads."""
    import pandas as pd

    if isinstance(data, pd.DataFrame):
        data = pa.Table.from_pandas(data, preserve_index=False)
    if isinstance(data, pa.Table):
        sink = io.BytesIO()
        with pa.ipc.new_file(sink, data.schema) as writer:
            writer.write_table(data)
        return sink.getvalue(), ARROW_FILE
    if isinstance(data, str | Path):
        path = Path(data)
        content_type = DATASET_FILE_TYPES.get(path.suffix.lower())
        if content_type is None:
            raise ValueError(f"cannot upload {path.name} as a dataset: use {', '.join(DATASET_FILE_TYPES)}")
        body = path.read_bytes()
        if content_type == ARROW_FILE and not body.startswith(b"ARROW1"):
            content_type = ARROW_STREAM  # .arrow is also used for IPC streams
        return body, content_type
    raise TypeError(f"upload_dataset() takes a DataFrame, pyarrow.Table or file path, not {type(data).__name__}")


def _records(rows: Any) -> list[dict[str, Any]]:
    import pandas as pd

    if isinstance(rows, pd.DataFrame):
        return rows.to_dict("records")  # type: ignore[return-value]
    if isinstance(rows, pa.Table):
        return rows.to_pylist()
    if isinstance(rows, dict):
        return [rows]
    return list(rows)


def _reference(reference: Any) -> dict[str, Any]:
    if isinstance(reference, str):
        return {"dataset": reference}
    if isinstance(reference, tuple) and len(reference) == 2:
        return _range(*reference)
    if isinstance(reference, dict) and set(reference) <= {"start", "end", "values", "dataset"}:
        return reference
    return {"values": _records(reference)}


def _range(start: datetime | str | None, end: datetime | str | None) -> dict[str, str]:
    out = {}
    for name, value in (("start", start), ("end", end)):
        if value is not None:
            out[name] = value.isoformat() if isinstance(value, datetime) else value
    return out


def _windows(rows: list[dict[str, Any]]) -> pd.DataFrame:
    import pandas as pd

    columns = ["window_start", "window_end", "score", "status", "rows", "bin_scores"]
    frame = pd.DataFrame([{c: r[c] for c in columns} for r in rows], columns=columns)
    for column in ("window_start", "window_end"):
        frame[column] = pd.to_datetime(frame[column], utc=True)
    return frame

