"""The control REST API (/api/v1) and the workspace-level V2 endpoints, as a FastAPI app."""

from __future__ import annotations

import asyncio
import logging
import re
from dataclasses import dataclass
from datetime import timedelta
from typing import Annotated, Any, cast

import orjson
import pyarrow as pa
import yaml
from fastapi import Depends, FastAPI, File, Form, Query, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field, field_validator
from starlette.exceptions import HTTPException as StarletteHTTPException

from cluster import audit as audit_log
from cluster.auth import Principal, Role
from cluster.openapi_errors import with_error_replies
from cluster.service import PENDING_RETRY_AFTER_S, ControlService
from explain.explanation import Explanation
from monitoring.log_store import rows_as_json
from monitoring.time_range import time_range
from pipelines.codecs.arrow import STREAM_TYPE as ARROW_STREAM
from pipelines.datasets import CSV_TYPE, JSON_TYPE, PARQUET_TYPE
from pipelines.errors import (
    BadPayload,
    CorralError,
    InvalidInput,
    NotFound,
    NotReady,
    PayloadTooLarge,
    Unauthenticated,
    UnsupportedMediaType,
)
from serving.admission import request_timeout_s
from serving.auth import client_of
from serving.errors import error_response

API = "/api/v1"
ARROW_FILE = "application/vnd.apache.arrow.file"


ASSAY_SPAN = timedelta(days=30)
BATCH_SHAPE = (
    '{"inputs": ["/abs/path or s3://... (files or directories)"], "output": "/abs/dir", '
    '"version": n, "variant": "v", "log": false}'
)
EXPLAIN_SHAPE = (
    '{"method": "anchors" | "kernel_shap" | "permutation" | "ale" | "pd", "instances": [records], '
    '"reference": {"values": [records]} | {"start", "end"} | {"dataset": "name"}, "labels": [...], "params": {...}}'
)


def _json_response(payload: Any) -> Response:
    return Response(orjson.dumps(payload, option=orjson.OPT_SERIALIZE_NUMPY), media_type="application/json")


def arrow_file(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_file(sink, table.schema) as writer:
        writer.write_table(table)
    return bytes(sink.getvalue().to_pybytes())
log = logging.getLogger("corral.api")


class WorkspaceIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*$")
_UNIT_S = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(value: float | str) -> float:
    """Seconds in a duration: a number of seconds, or text like '45s', '15m', '12h', '30d', '2w'."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        seconds = float(value)
    else:
        match = _DURATION.match(str(value).lower())
        if match is None:
            raise ValueError(f"{value!r} is not a duration: use seconds (3600) or text like '12h', '30d'")
        seconds = float(match.group(1)) * _UNIT_S[match.group(2)]
    if not 0 < seconds <= 10 * 365 * 86400:
        raise ValueError(f"{value!r} must be more than 0 s and at most 10 years")
    return seconds


class TokenIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    role: str
    expires_in: float | None = Field(default=None, description="seconds, or text like '12h' or '30d'")

    @field_validator("expires_in", mode="before")
    @classmethod
    def _duration(cls, v: float | str | None) -> float | None:
        return None if v is None else parse_duration(v)


class DeployIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    version: int | None = None


def service(request: Request) -> ControlService:
    """The ControlService this app was built around (build_api)."""
    return cast(ControlService, request.app.state.service)


Service = Annotated[ControlService, Depends(service)]


def principal(request: Request, svc: Service) -> Principal:
    header = request.headers.get("authorization", "")
    token = header[7:].strip() if header[:7].lower() == "bearer " else None
    try:
        who = svc.registry.authenticate(token)
    except Unauthenticated as exc:
        peer = request.client.host if request.client else None
        raise svc.auth_failures.failed(client_of(dict(request.headers), peer), exc) from None
    audit_log.note(request, who=who)
    return who


Who = Annotated[Principal, Depends(principal)]

@dataclass(frozen=True)
class Upload:
    """A named file an editor uploaded as multipart form data (fields `name` and `file`)."""

    name: str
    filename: str
    data: bytes


async def editor_upload(
    w: str,
    name: Annotated[str, Form()],
    file: Annotated[UploadFile, File()],
    request: Request,
    who: Who,
    svc: Service,
) -> Upload:
    audit_log.note(request, target=name)
    who.require(w, Role.editor)
    limit = svc.settings.max_payload_bytes
    data = await file.read(limit + 1)
    if len(data) > limit:
        raise PayloadTooLarge(f"upload is over {limit} bytes: raise CORRAL_MAX_PAYLOAD_BYTES to allow it")
    if not data:
        raise BadPayload("the uploaded file is empty")
    return Upload(name, file.filename or "", data)


EditorUpload = Annotated[Upload, Depends(editor_upload)]


async def limited_body(request: Request, limit: int, setting: str = "CORRAL_MAX_PAYLOAD_BYTES") -> bytes:
    """The raw body, refused with a 413 as soon as it passes `limit` bytes (not after buffering it
    all; at once when its Content-Length says so)."""
    length = request.headers.get("content-length", "")
    if length.isdigit() and int(length) > limit:
        raise PayloadTooLarge(
            f"the body is {int(length)} bytes, over the limit of {limit}: send less or raise {setting}"
        )
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"the body is over the limit of {limit} bytes: send less or raise {setting}")
        chunks.append(chunk)
    return b"".join(chunks)


async def control_body(request: Request, svc: ControlService) -> bytes:
    """The body of a JSON control endpoint (specs, traffic, explain requests), capped by CORRAL_MAX_JSON_BYTES."""
    return await limited_body(request, svc.settings.max_json_bytes, "CORRAL_MAX_JSON_BYTES")


# The body is raw bytes read from the request, so FastAPI cannot document it on its own.
DATASET_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            media: {"schema": {"type": "string", "format": "binary"}}
            for media in (PARQUET_TYPE, ARROW_FILE, ARROW_STREAM, CSV_TYPE, JSON_TYPE)
        },
    }
}

TRAFFIC_SHAPE = '{"weights": {"variant": number}, "key": "column" or null, "shadows": ["variant"]}'


async def json_body(request: Request, svc: ControlService, shape: str) -> Any:
    """The request's JSON body; a 400 that shows the expected shape when it is empty or not JSON."""
    return decode_json(await control_body(request, svc), f"JSON like {shape}")


def decode_json(body: bytes, expected: str) -> Any:
    if not body.strip():
        raise BadPayload(f"empty body: send {expected}")
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise BadPayload(f"the body is not valid JSON ({exc}): send {expected}") from None


def parse_spec_body(body: bytes, content_type: str, what: str = "a pipeline spec") -> Any:
    if not body.strip():
        raise BadPayload(f"empty body: send {what} as JSON or YAML")
    media = content_type.split(";")[0].strip().lower()
    if media in ("application/json", ""):
        return decode_json(body, f"{what} as JSON or YAML")
    if media in ("application/yaml", "application/x-yaml", "text/yaml", "text/x-yaml"):
        try:
            return yaml.safe_load(body)
        except yaml.YAMLError as exc:
            raise BadPayload(f"the spec is not valid YAML: {exc}") from exc
    raise UnsupportedMediaType(f"send the spec as application/json or application/yaml, not {media!r}")


def build_api(svc: ControlService) -> FastAPI:
    """The control app around `svc`: every endpoint reaches the service through `app.state`, so a
    test can build one on any ControlService and drive it with FastAPI's TestClient."""
    app = FastAPI(
        title="Corral",
        version="0.1.0",
        description="Control plane of Corral: workspaces, tokens, models, code, pipelines.",
        openapi_url=f"{API}/openapi.json",
        docs_url=f"{API}/docs",
        redoc_url=None,
    )
    app.state.service = svc

    # Every control-plane change leaves an audit row; cluster/audit.py names each route's action.
    app.add_middleware(audit_log.AuditLog, registry=svc.registry, prefix=API)

    @app.exception_handler(CorralError)
    async def _domain(_: Request, exc: CorralError) -> Response:
        return error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> Response:
        parts = [f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in exc.errors()]
        return JSONResponse({"error": "invalid request: " + "; ".join(parts)}, status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> Response:
        message = exc.detail if exc.status_code != 404 else "no such endpoint: see /api/v1/docs"
        return JSONResponse({"error": message}, status_code=exc.status_code)

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> Response:
        log.exception("unexpected error in the control API", exc_info=exc)
        message = f"internal error ({type(exc).__name__}: {exc}); see the corral-control replica log"
        return JSONResponse({"error": message[:2000]}, status_code=500)

    # --- workspaces and tokens --------------------------------------------------------------
    @app.post(f"{API}/workspaces", status_code=201)
    def create_workspace(body: WorkspaceIn, request: Request, who: Who) -> dict[str, str]:
        audit_log.note(request, target=body.name)
        name = svc.registry.create_workspace(who, body.name)
        audit_log.note(request, workspace=name)  # its creation opens its own audit log
        return {"name": name}

    @app.get(f"{API}/workspaces")
    def list_workspaces(who: Who) -> list[dict[str, str]]:
        return [{"name": n} for n in svc.registry.list_workspaces(who)]

    @app.post(f"{API}/workspaces/{{w}}/tokens", status_code=201)
    def create_token(w: str, body: TokenIn, request: Request, who: Who) -> dict[str, Any]:
        """A new token `{id, token, role, expires_at}` (owner); the secret is shown only here."""
        created = svc.registry.create_token(who, w, body.role, body.expires_in)
        audit_log.note(request, target=created["id"])
        return created

    @app.get(f"{API}/workspaces/{{w}}/tokens")
    def list_tokens(w: str, who: Who) -> list[dict[str, Any]]:
        """The workspace's live tokens: id, role, created_at, expires_at; never the secrets (owner)."""
        return svc.registry.list_tokens(who, w)

    @app.delete(f"{API}/workspaces/{{w}}/tokens/{{token_id}}", status_code=204)
    def revoke_token(w: str, token_id: str, who: Who) -> Response:
        """Revoke a token: it answers 401 everywhere within 1 s (owner)."""
        svc.registry.revoke_token(who, w, token_id)
        return Response(status_code=204)

    @app.get(f"{API}/workspaces/{{w}}/audit")
    def audit(
        w: str,
        who: Who,
        start: str | None = None,
        end: str | None = None,
        limit: int = Query(default=1000, ge=1, le=100_000),
    ) -> list[dict[str, Any]]:
        """Control-plane changes in the workspace, newest first: time, token_id, role, action, target,
        status, method, path (owner)."""
        since, until = time_range(start, end, default_span=timedelta(days=7))
        return svc.registry.audit(who, w, since, until, limit)

    # --- models and code ----------------------------------------------------------------------
    @app.post(f"{API}/workspaces/{{w}}/models", status_code=201)
    async def upload_model(w: str, upload: EditorUpload, who: Who) -> dict[str, Any]:
        return await asyncio.to_thread(svc.registry.upload_model, who, w, upload.name, upload.data)

    @app.get(f"{API}/workspaces/{{w}}/models")
    def list_models(w: str, who: Who) -> list[dict[str, Any]]:
        return svc.registry.list_models(who, w)

    @app.get(f"{API}/workspaces/{{w}}/models/{{name}}")
    def model_versions(w: str, name: str, who: Who) -> list[dict[str, Any]]:
        return svc.registry.model_versions(who, w, name)

    @app.post(f"{API}/workspaces/{{w}}/code", status_code=201)
    async def upload_code(w: str, upload: EditorUpload, who: Who) -> dict[str, Any]:
        return await asyncio.to_thread(svc.registry.upload_code, who, w, upload.name, upload.filename, upload.data)

    # --- reference datasets -------------------------------------------------------------------
    @app.put(f"{API}/workspaces/{{w}}/datasets/{{name}}", status_code=201, openapi_extra=DATASET_BODY)
    async def upload_dataset(w: str, name: str, request: Request, who: Who) -> Response:
        """Upload a table (Parquet, Arrow IPC, CSV or JSON records, by Content-Type) as a new version of
        dataset NAME: 201, or 200 with the latest version when the values are identical to it."""
        who.require(w, Role.editor)
        body = await limited_body(request, svc.settings.max_payload_bytes)
        content_type = request.headers.get("content-type")
        info, created = await asyncio.to_thread(svc.registry.put_dataset, who, w, name, body, content_type)
        return JSONResponse(info, status_code=201 if created else 200)

    @app.get(f"{API}/workspaces/{{w}}/datasets")
    def list_datasets(w: str, who: Who) -> list[dict[str, Any]]:
        return svc.registry.list_datasets(who, w)

    @app.get(f"{API}/workspaces/{{w}}/datasets/{{name}}")
    def dataset_versions(w: str, name: str, who: Who) -> list[dict[str, Any]]:
        return svc.registry.dataset_versions(who, w, name)

    # --- pipelines ----------------------------------------------------------------------------
    @app.put(f"{API}/workspaces/{{w}}/pipelines/{{p}}", status_code=201)
    async def put_pipeline(w: str, p: str, request: Request, who: Who) -> Response:
        who.require(w, Role.editor)
        body = await control_body(request, svc)
        data = parse_spec_body(body, request.headers.get("content-type", ""))
        version, created = await asyncio.to_thread(svc.registry.put_pipeline, who, w, p, data)
        return JSONResponse({"name": p, "version": version}, status_code=201 if created else 200)

    @app.get(f"{API}/workspaces/{{w}}/pipelines")
    def list_pipelines(w: str, who: Who) -> list[dict[str, Any]]:
        rows = svc.registry.list_pipelines(who, w)
        for row in rows:
            row["status"] = svc.deployer.status(w, row["name"], row["deployed"])
        return rows

    @app.get(f"{API}/workspaces/{{w}}/pipelines/{{p}}")
    def get_pipeline(w: str, p: str, who: Who) -> dict[str, Any]:
        return svc.describe_pipeline(who, w, p)

    @app.get(f"{API}/workspaces/{{w}}/pipelines/{{p}}/versions")
    def pipeline_versions(w: str, p: str, who: Who) -> list[dict[str, Any]]:
        return svc.registry.pipeline_versions(who, w, p)

    @app.post(f"{API}/workspaces/{{w}}/pipelines/{{p}}/deploy")
    async def deploy(w: str, p: str, request: Request, who: Who) -> dict[str, Any]:
        """Deploy a version (default the latest); 200 once it serves. It waits up to X-Corral-Timeout-Ms
        (default CORRAL_DEPLOY_TIMEOUT_S); then a 503 says why, e.g. the resources the cluster lacks."""
        who.require(w, Role.editor)
        body = await control_body(request, svc)
        try:
            params = DeployIn.model_validate_json(body) if body.strip() else DeployIn()
        except ValueError as exc:
            raise InvalidInput(f'deploy body must be {{"version": <int>}} or empty: {exc}') from exc
        timeout_s = request_timeout_s(request.headers, svc.settings.deploy_timeout_s)
        return await svc.deploy(who, w, p, params.version, timeout_s)

    @app.post(f"{API}/workspaces/{{w}}/pipelines/{{p}}/undeploy")
    async def undeploy(w: str, p: str, who: Who) -> dict[str, Any]:
        who.require(w, Role.editor)
        await asyncio.to_thread(svc.registry.get_pipeline_version, who, w, p)
        await svc.deployer.undeploy(w, p)
        await svc.explanations.remove(w, p)
        return {"name": p, "status": "undeployed"}

    @app.put(f"{API}/workspaces/{{w}}/pipelines/{{p}}/traffic")
    async def set_traffic(w: str, p: str, request: Request, who: Who) -> dict[str, Any]:
        """Live traffic: weights per variant, an optional split key column, shadows. No restart."""
        who.require(w, Role.editor)
        return await svc.set_traffic(who, w, p, await json_body(request, svc, TRAFFIC_SHAPE))

    @app.get(f"{API}/workspaces/{{w}}/pipelines/{{p}}/traffic")
    def get_traffic(w: str, p: str, who: Who) -> dict[str, Any]:
        described = svc.describe_pipeline(who, w, p)
        return {"version": described["version"], "status": described["status"], **(described["traffic"] or {})}

    @app.put(f"{API}/workspaces/{{w}}/pipelines/{{p}}/variants/{{v}}/steps/{{s}}/model")
    async def swap_model(w: str, p: str, v: str, s: str, request: Request, who: Who) -> dict[str, Any]:
        """Hot-swap one step's model in place; returns once the replicas serve the new one."""
        who.require(w, Role.editor)
        body = await json_body(request, svc, '{"model": "name:version"}')
        if not isinstance(body, dict) or set(body) != {"model"} or not isinstance(body["model"], str):
            raise InvalidInput('send {"model": "name:version"}, naming a model uploaded to this workspace')
        return await svc.swap_model(who, w, p, v, s, body["model"])

    @app.get(f"{API}/workspaces/{{w}}/pipelines/{{p}}/logs")
    async def logs(
        w: str, p: str, request: Request, who: Who, start: str | None = None, end: str | None = None, limit: int = 1000
    ) -> Response:
        """Inference log rows in [start, end) (ISO 8601; default the last day): the newest `limit`,
        oldest first. JSON `{"rows": [...]}`, or an Arrow file with `Accept: application/vnd.apache.arrow.file`."""
        table = await asyncio.to_thread(svc.query_logs, who, w, p, start, end, limit)
        if ARROW_FILE in request.headers.get("accept", ""):
            return Response(arrow_file(table), media_type=ARROW_FILE)
        return Response(orjson.dumps({"rows": rows_as_json(table)}), media_type="application/json")

    # --- explanations ---------------------------------------------------------------------------
    @app.post(f"{API}/workspaces/{{w}}/pipelines/{{p}}/explain")
    async def explain(w: str, p: str, request: Request, who: Who) -> Response:
        """Explain a deployed pipeline (black box, pre-processing included). JSON `{"meta", "data"}`,
        or its chart as a PNG with `Accept: image/png`."""
        body = await json_body(request, svc, EXPLAIN_SHAPE)
        result = await svc.explanations.explain(who, w, p, body)
        if "image/png" in request.headers.get("accept", ""):
            png = await asyncio.to_thread(Explanation.model_validate(result).chart)
            return Response(png, media_type="image/png")
        return _json_response(result)

    @app.get(f"{API}/workspaces/{{w}}/pipelines/{{p}}/explain/progress")
    async def explain_progress(w: str, p: str, who: Who) -> list[dict[str, Any]]:
        """The pipeline's running explanations: stage, elapsed seconds, predict calls and rows so far."""
        return await svc.explanations.progress(who, w, p)

    # --- batch inference ------------------------------------------------------------------------
    @app.post(f"{API}/workspaces/{{w}}/pipelines/{{p}}/batch", status_code=202)
    async def start_batch(w: str, p: str, request: Request, who: Who) -> dict[str, Any]:
        """Run a pipeline version's steps over files on Ray Data (Parquet, CSV, JSON lines; local paths the
        cluster reads, or s3:// URIs), writing Parquet under `output`. 202 with the run's id: poll
        `GET /workspaces/{w}/batch/{id}`. Default version: the deployed one; default variant: the primary."""
        body = await json_body(request, svc, BATCH_SHAPE)
        return await asyncio.to_thread(svc.start_batch, who, w, p, body)

    @app.get(f"{API}/workspaces/{{w}}/batch/{{job_id}}")
    async def batch_progress(w: str, job_id: str, who: Who) -> dict[str, Any]:
        """A batch run: state (running | succeeded | failed), rows done, rows_total (when the inputs tell),
        files, seconds, rows_per_s, error."""
        return await svc.batch_progress(who, w, job_id)

    # --- assays ---------------------------------------------------------------------------------
    @app.put(f"{API}/workspaces/{{w}}/assays/{{a}}", status_code=201)
    async def put_assay(w: str, a: str, request: Request, who: Who) -> Response:
        """Create or change a drift assay (JSON or YAML). A changed spec starts its results over."""
        who.require(w, Role.editor)
        body = await control_body(request, svc)
        data = parse_spec_body(body, request.headers.get("content-type", ""), "an assay spec")
        described, created = await asyncio.to_thread(svc.assays.put, who, w, a, data)
        return JSONResponse(described, status_code=201 if created else 200)

    @app.get(f"{API}/workspaces/{{w}}/assays")
    def list_assays(w: str, who: Who) -> list[dict[str, Any]]:
        return svc.assays.list_all(who, w)

    @app.get(f"{API}/workspaces/{{w}}/assays/{{a}}")
    def get_assay(w: str, a: str, who: Who) -> dict[str, Any]:
        return svc.assays.get(who, w, a)

    @app.delete(f"{API}/workspaces/{{w}}/assays/{{a}}")
    def delete_assay(w: str, a: str, who: Who) -> dict[str, Any]:
        svc.assays.delete(who, w, a)
        return {"name": a, "deleted": True}

    @app.get(f"{API}/workspaces/{{w}}/assays/{{a}}/results")
    async def assay_results(w: str, a: str, who: Who, start: str | None = None, end: str | None = None) -> Response:
        """Stored windows starting in [start, end) (default: the last 30 days), oldest first."""
        since, until = time_range(start, end, default_span=ASSAY_SPAN)
        results = await asyncio.to_thread(svc.assays.results, who, w, a, since, until)
        return _json_response([r.to_dict() for r in results])

    @app.post(f"{API}/workspaces/{{w}}/assays/{{a}}/preview")
    async def assay_preview(w: str, a: str, request: Request, who: Who) -> Response:
        """The assay's windows over logged history in [start, end), computed now; nothing is stored."""
        body = await control_body(request, svc)
        window = decode_json(body, '{"start": ISO time, "end": ISO time}') if body.strip() else {}
        if not isinstance(window, dict) or set(window) - {"start", "end"}:
            raise InvalidInput('send {"start": ISO 8601 time, "end": ISO 8601 time} (both optional)')
        since, until = time_range(window.get("start"), window.get("end"), default_span=timedelta(days=1))
        results = await asyncio.to_thread(svc.assays.preview, who, w, a, since, until)
        return _json_response([r.to_dict() for r in results])

    @app.get(f"{API}/workspaces/{{w}}/assays/{{a}}/chart", response_class=Response)
    async def assay_chart(
        w: str, a: str, who: Who, start: str | None = None, end: str | None = None, preview: bool = False
    ) -> Response:
        """PNG: baseline vs latest window histogram, and scores over time (stored, or `preview=true`)."""
        since, until = time_range(start, end, default_span=ASSAY_SPAN if not preview else timedelta(days=1))
        fetch = svc.assays.preview if preview else svc.assays.results
        results = await asyncio.to_thread(fetch, who, w, a, since, until)
        png = await asyncio.to_thread(svc.assays.chart, who, w, a, results)
        return Response(png, media_type="image/png")

    # --- workspace-level Open Inference Protocol ------------------------------------------------
    @app.get("/ws/{w}/v2")
    def server_metadata(w: str, who: Who) -> dict[str, Any]:
        svc.registry.check_workspace(who, w, Role.viewer)
        return {"name": f"corral/{w}", "version": "0.1.0", "extensions": ["binary_tensor_data"]}

    @app.get("/ws/{w}/v2/health/live")
    @app.get("/ws/{w}/v2/health/ready")
    def health(w: str, who: Who) -> dict[str, bool]:
        svc.registry.check_workspace(who, w, Role.viewer)
        return {"live": True, "ready": True}

    @app.api_route("/ws/{w}/v2/models/{rest:path}", methods=["GET", "POST", "PUT", "DELETE"], include_in_schema=False)
    async def model_fallback(w: str, rest: str, request: Request, who: Who) -> Response:
        # Reached when no pipeline app owns the path: unknown, not deployed, or the HTTP proxy has not
        # caught up with a route that just changed (then the request is forwarded to the router).
        await asyncio.to_thread(svc.registry.check_workspace, who, w, Role.viewer)
        name = rest.split("/", 1)[0]
        state = await asyncio.to_thread(svc.registry.pipeline_state, w, name)
        if state is None:
            raise NotFound(f"pipeline {name!r} not found in workspace {w!r}: list them with `corral pipelines list`")
        if not state.deployed and svc.deployer.status(w, name, False) != "deploying":
            raise NotFound(f"pipeline {name!r} is not deployed: deploy it with `corral pipelines deploy {name}`")
        reason = await svc.pending_reason(w, name)
        if reason is not None:
            raise NotReady(
                f"pipeline {name!r} is pending: {reason}. It starts by itself once the cluster can place it "
                "(add a node with those resources, or deploy a version that asks for less)",
                retry_after_s=PENDING_RETRY_AFTER_S,
            )
        headers = {k.lower(): v for k, v in request.headers.items()}
        body = await limited_body(request, svc.settings.max_payload_bytes)
        forwarded = await svc.forward(w, name, request.method, request.url.path, headers, body)
        if forwarded is None:
            raise NotReady(f"pipeline {name!r} is starting: retry in a few seconds", retry_after_s=2)
        status, reply_headers, body = forwarded
        return Response(body, status_code=status, headers=reply_headers)

    app.openapi = with_error_replies(app)  # type: ignore[method-assign]
    return app
