"""The registry: workspaces, tokens, models, code and pipeline versions, on the store.

Every method is one transaction: it either changes the store completely or not at all.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import pyarrow as pa
from pydantic import ValidationError
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from cluster import code_packages
from cluster.auth import Principal, Role, hash_token, new_token
from cluster.convert import describe_onnx
from cluster.store.artifacts import ArtifactStore
from cluster.store.db import Database
from cluster.store.tables import (
    AuditEntry,
    CodeVersion,
    DatasetVersion,
    ModelVersion,
    Pipeline,
    PipelineVersion,
    Token,
    Workspace,
    utcnow,
)
from pipelines.datasets import describe_columns, from_parquet, parse_dataset_ref, read_dataset, to_parquet
from pipelines.errors import Conflict, Forbidden, InvalidInput, NotFound, Unauthenticated
from pipelines.rules import check_columns, parse_rules
from pipelines.spec import PipelineSpec, TrafficSpec, check_name, parse_model_ref
from pipelines.validation import ModelSignature, validate_pipeline

MAX_FILENAME = 255  # CodeVersion.filename's column: PostgreSQL refuses longer ones, SQLite would keep them


def spec_errors(exc: ValidationError) -> str:
    """pydantic's errors as one readable line per problem, with where it is."""
    parts = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"]) or "spec"
        parts.append(f"{where}: {err['msg']}")
    return "; ".join(parts)


def parse_spec(data: Any) -> PipelineSpec:
    try:
        return PipelineSpec.model_validate(data)
    except ValidationError as exc:
        raise InvalidInput(f"invalid pipeline spec: {spec_errors(exc)}") from exc


@dataclass(frozen=True)
class ResolvedStep:
    """What a replica needs to build a step: exact model artifact or code artifact."""

    model_sha256: str | None
    model_ref: str | None
    code_sha256: str | None
    code_filename: str | None


class Registry:
    """All reads and writes of the registry database and the artifact store."""

    def __init__(
        self, db: Database, artifacts: ArtifactStore, code_limits: code_packages.CodeLimits | None = None
    ) -> None:
        self.db = db
        self.artifacts = artifacts
        self.code_limits = code_limits or code_packages.CodeLimits()

    # --- auth -------------------------------------------------------------------------------
    def ensure_admin(self, token_hash: str) -> None:
        with self.db.session() as s:
            if s.get(Token, token_hash) is None:
                s.add(Token(token_hash=token_hash, workspace=None, role=Role.admin.name))
            if s.get(Workspace, "default") is None:
                s.add(Workspace(name="default"))

    def authenticate(self, token: str | None) -> Principal:
        return self.principal_for_hash(hash_token(token) if token else None)

    def principal_for_hash(self, token_hash: str | None) -> Principal:
        if not token_hash:
            raise Unauthenticated("missing token: send the header 'Authorization: Bearer <token>'")
        with self.db.session() as s:
            row = s.get(Token, token_hash)
            if row is None:
                raise Unauthenticated("unknown token: check it, or ask a workspace owner for a new one")
            if row.revoked_at is not None:
                raise Unauthenticated(f"token {row.id} was revoked: ask a workspace owner for a new one")
            if row.expires_at is not None and _aware(row.expires_at) <= utcnow():
                expired = _iso(row.expires_at)
                raise Unauthenticated(f"token {row.id} expired at {expired}: ask a workspace owner for a new one")
            return Principal(Role.parse(row.role), row.workspace, row.id)

    # --- workspaces and tokens ----------------------------------------------------------------
    def create_workspace(self, who: Principal, name: str) -> str:
        if not who.is_admin:
            raise Forbidden("creating workspaces needs the admin token (in $CORRAL_HOME/admin-token)")
        try:
            check_name("workspace", name)
        except ValueError as exc:
            raise InvalidInput(str(exc)) from exc
        with self.db.session() as s:
            if s.get(Workspace, name) is not None:
                raise Conflict(f"workspace {name!r} already exists: pick another name or use it")
            s.add(Workspace(name=name))
        return name

    def list_workspaces(self, who: Principal) -> list[str]:
        with self.db.session() as s:
            names = list(s.scalars(select(Workspace.name)))
        return [n for n in sorted(names) if who.can_see(n)]  # sorted here: a database's collation may differ

    def check_workspace(self, who: Principal, workspace: str, role: Role) -> None:
        who.require(workspace, role)
        with self.db.session() as s:
            if s.get(Workspace, workspace) is None:
                raise NotFound(f"workspace {workspace!r} not found: create it with `corral workspaces create`")

    def create_token(
        self, who: Principal, workspace: str, role_name: str, expires_in_s: float | None = None
    ) -> dict[str, Any]:
        """A new token: `{id, token, role, expires_at}`; the secret is shown this once, stored hashed."""
        self.check_workspace(who, workspace, Role.owner)
        try:
            role = Role.parse(role_name)
        except ValueError as exc:
            raise InvalidInput(str(exc)) from exc
        if role is Role.admin:
            raise InvalidInput("workspace tokens can be viewer, editor or owner, not admin")
        if expires_in_s is not None and expires_in_s <= 0:
            raise InvalidInput("expires_in must be a positive duration, like 3600, '12h' or '30d'")
        token = new_token()
        expires_at = utcnow() + timedelta(seconds=expires_in_s) if expires_in_s is not None else None
        row = Token(token_hash=hash_token(token), workspace=workspace, role=role.name, expires_at=expires_at)
        with self.db.session() as s:
            s.add(row)
        return {"id": row.id, "token": token, "role": role.name, "expires_at": _iso(expires_at)}

    def list_tokens(self, who: Principal, workspace: str) -> list[dict[str, Any]]:
        """The workspace's tokens that are not revoked: ids, roles and times, never the secrets (owner)."""
        self.check_workspace(who, workspace, Role.owner)
        with self.db.session() as s:
            rows = s.scalars(
                select(Token).where(Token.workspace == workspace, Token.revoked_at.is_(None)).order_by(Token.created_at)
            )
            return [
                {"id": r.id, "role": r.role, "created_at": _iso(r.created_at), "expires_at": _iso(r.expires_at)}
                for r in rows
            ]

    def revoke_token(self, who: Principal, workspace: str, token_id: str) -> None:
        """Revoke one of the workspace's tokens by its id (owner); routers stop honouring it within 1 s."""
        self.check_workspace(who, workspace, Role.owner)
        unknown = NotFound(
            f"workspace {workspace!r} has no token {token_id!r}: list them with `corral workspaces tokens list`"
        )
        # ids are 16 hex digits; anything else (a shorter prefix, LIKE wildcards) could match other tokens
        if len(token_id) != 16 or not set(token_id) <= set("0123456789abcdef"):
            raise unknown
        with self.db.session() as s:
            row = s.scalars(
                select(Token).where(
                    Token.workspace == workspace, Token.token_hash.startswith(token_id), Token.revoked_at.is_(None)
                )
            ).first()
            if row is None:
                raise unknown
            row.revoked_at = utcnow()

    # --- audit --------------------------------------------------------------------------------
    def record_audit(
        self,
        who: Principal | None,
        workspace: str | None,
        action: str,
        target: str,
        status: int,
        *,
        method: str | None = None,
        path: str | None = None,
    ) -> None:
        """One control-plane change: `action` a verb on a noun (pipeline.deploy), `target` the object's
        name; `method` and `path` the HTTP request that made it (None for one the control plane made)."""
        with self.db.session() as s:
            s.add(
                AuditEntry(
                    workspace=workspace,
                    token_id=who.token_id if who else None,
                    role=who.role.name if who else None,
                    action=action[:64],
                    target=target[:512],
                    status=status,
                    method=method,
                    path=None if path is None else path[:1024],
                )
            )

    def audit(
        self, who: Principal, workspace: str, start: datetime, end: datetime, limit: int
    ) -> list[dict[str, Any]]:
        """The workspace's control-plane changes in [start, end), newest first (owner)."""
        self.check_workspace(who, workspace, Role.owner)
        with self.db.session() as s:
            rows = s.scalars(
                select(AuditEntry)
                .where(AuditEntry.workspace == workspace, AuditEntry.time >= start, AuditEntry.time < end)
                .order_by(AuditEntry.time.desc(), AuditEntry.id.desc())
                .limit(limit)
            )
            return [
                {
                    "time": _iso(r.time),
                    "token_id": r.token_id,
                    "role": r.role,
                    "action": r.action,
                    "target": r.target,
                    "status": r.status,
                    "method": r.method,
                    "path": r.path,
                }
                for r in rows
            ]

    # --- models -------------------------------------------------------------------------------
    def upload_model(self, who: Principal, workspace: str, name: str, data: bytes) -> dict[str, Any]:
        self.check_workspace(who, workspace, Role.editor)
        try:
            check_name("model", name)
        except ValueError as exc:
            raise InvalidInput(str(exc)) from exc
        inputs, outputs = describe_onnx(data)  # raises InvalidInput before anything is written
        digest = self.artifacts.put(data)
        with self.db.session() as s:
            latest = _latest(s, ModelVersion, workspace, name)
            if latest is not None and latest.sha256 == digest:
                return _model_dict(latest)
            version = (latest.version + 1) if latest else 1
            row = ModelVersion(
                workspace=workspace, name=name, version=version, sha256=digest, inputs=inputs, outputs=outputs
            )
            s.add(row)
            s.flush()
            return _model_dict(row)

    def list_models(self, who: Principal, workspace: str) -> list[dict[str, Any]]:
        self.check_workspace(who, workspace, Role.viewer)
        with self.db.session() as s:
            return [_model_dict(row) for row in _latest_each(s, ModelVersion, workspace)]

    def model_versions(self, who: Principal, workspace: str, name: str) -> list[dict[str, Any]]:
        self.check_workspace(who, workspace, Role.viewer)
        with self.db.session() as s:
            rows = _versions(s, ModelVersion, workspace, name)
            if not rows:
                raise NotFound(f"model {name!r} not found in workspace {workspace!r}: upload it first")
            return [_model_dict(r) for r in reversed(rows)]

    def resolve_model(self, s: Session, workspace: str, ref: str) -> ModelVersion:
        try:
            name, version = parse_model_ref(ref)
        except ValueError as exc:
            raise InvalidInput(str(exc)) from exc
        row = _latest(s, ModelVersion, workspace, name, version)
        if row is None:
            raise InvalidInput(
                f"model {ref!r} is not in workspace {workspace!r}: upload it (corral models upload) "
                "or fix the name:version"
            )
        return row

    # --- code ---------------------------------------------------------------------------------
    def upload_code(self, who: Principal, workspace: str, name: str, filename: str, data: bytes) -> dict[str, Any]:
        self.check_workspace(who, workspace, Role.editor)
        try:
            check_name("code", name)
        except ValueError as exc:
            raise InvalidInput(str(exc)) from exc
        if len(filename) > MAX_FILENAME:
            raise InvalidInput(f"code file name is {len(filename)} characters long: keep it to {MAX_FILENAME}")
        sources = code_packages.read_sources(filename, data, self.code_limits)
        modules = code_packages.top_level_modules(sources)
        digest = self.artifacts.put(data)
        with self.db.session() as s:
            latest = _latest(s, CodeVersion, workspace, name)
            if latest is not None and latest.sha256 == digest:
                return {"name": name, "version": latest.version, "sha256": digest, "modules": latest.modules}
            version = (latest.version + 1) if latest else 1
            s.add(
                CodeVersion(
                    workspace=workspace,
                    name=name,
                    version=version,
                    sha256=digest,
                    filename=filename,
                    modules=modules,
                )
            )
        return {"name": name, "version": version, "sha256": digest, "modules": modules}

    def resolve_code(self, s: Session, workspace: str, ref: str) -> CodeVersion:
        name, _, version = ref.partition(":")
        if version and not version.isdigit():
            raise InvalidInput(f"code version in {ref!r} must be a number, like '{name}:1'")
        row = _latest(s, CodeVersion, workspace, name, int(version) if version else None)
        if row is None:
            raise InvalidInput(f"code {ref!r} is not in workspace {workspace!r}: upload it with `corral code upload`")
        return row

    def code_sources(self, sha256: str, filename: str) -> dict[str, str]:
        return code_packages.read_sources(filename, self.artifacts.get(sha256))

    # --- reference datasets -------------------------------------------------------------------
    def put_dataset(
        self, who: Principal, workspace: str, name: str, data: bytes, content_type: str | None
    ) -> tuple[dict[str, Any], bool]:
        """Store a tabular upload as a new version of dataset `name`: `{name, version, rows, columns, sha256}`,
        and whether it made a new version (False: identical to the latest, which is returned)."""
        self.check_workspace(who, workspace, Role.editor)
        try:
            check_name("dataset", name)
        except ValueError as exc:
            raise InvalidInput(str(exc)) from exc
        table = read_dataset(data, content_type)  # raises before anything is written
        # Stored as canonical Parquet, so the same values sent as CSV or Arrow are the same version.
        digest = self.artifacts.put(to_parquet(table))
        with self.db.session() as s:
            latest = _latest(s, DatasetVersion, workspace, name)
            if latest is not None and latest.sha256 == digest:
                return _dataset_dict(latest), False
            row = DatasetVersion(
                workspace=workspace,
                name=name,
                version=(latest.version + 1) if latest else 1,
                sha256=digest,
                rows=table.num_rows,
                columns=describe_columns(table),
            )
            s.add(row)
            s.flush()
            return _dataset_dict(row), True

    def list_datasets(self, who: Principal, workspace: str) -> list[dict[str, Any]]:
        """The latest version of each dataset, by name."""
        self.check_workspace(who, workspace, Role.viewer)
        with self.db.session() as s:
            return [_dataset_dict(row, created_at=True) for row in _latest_each(s, DatasetVersion, workspace)]

    def dataset_versions(self, who: Principal, workspace: str, name: str) -> list[dict[str, Any]]:
        """Every version of dataset `name`, oldest first."""
        self.check_workspace(who, workspace, Role.viewer)
        with self.db.session() as s:
            rows = _versions(s, DatasetVersion, workspace, name)
            if not rows:
                raise NotFound(
                    f"dataset {name!r} not found in workspace {workspace!r}: upload it with "
                    f"`corral datasets upload {name} FILE`"
                )
            return [_dataset_dict(r, created_at=True) for r in reversed(rows)]

    def load_dataset(self, workspace: str, ref: str) -> pa.Table:
        """The table of dataset `ref` ("name" = latest, or "name:version"), for server-side use
        such as explainers' reference data. Callers check the principal themselves."""
        try:
            name, version = parse_dataset_ref(ref)
        except ValueError as exc:
            raise InvalidInput(str(exc)) from exc
        with self.db.session() as s:
            row = _latest(s, DatasetVersion, workspace, name, version)
        if row is None:
            raise InvalidInput(
                f"dataset {ref!r} is not in workspace {workspace!r}: upload it with "
                f"`corral datasets upload {name} FILE` (or PUT /api/v1/workspaces/{workspace}/datasets/{name}), "
                "or fix the name:version"
            )
        return from_parquet(self.artifacts.get(row.sha256))

    # --- pipelines ----------------------------------------------------------------------------
    def put_pipeline(self, who: Principal, workspace: str, name: str, data: Any) -> tuple[int, bool]:
        """Validate a spec and store it as a new immutable version; identical to latest -> no new version."""
        self.check_workspace(who, workspace, Role.editor)
        try:
            check_name("pipeline", name)
        except ValueError as exc:
            raise InvalidInput(str(exc)) from exc
        spec = parse_spec(data)
        canonical = spec.model_dump(mode="json", exclude_defaults=False)
        with self.db.session() as s:
            resolved = self._resolve(s, workspace, spec)
            latest = _latest(s, PipelineVersion, workspace, name)
            if latest is not None and latest.spec == canonical and latest.resolved == resolved:
                return latest.version, False
            version = (latest.version + 1) if latest else 1
            s.add(PipelineVersion(workspace=workspace, name=name, version=version, spec=canonical, resolved=resolved))
            if s.get(Pipeline, (workspace, name)) is None:
                s.add(Pipeline(workspace=workspace, name=name, deployed=False))
        return version, True

    def _resolve(self, s: Session, workspace: str, spec: PipelineSpec) -> dict[str, Any]:
        """Pin every model and code ref to an exact version, and check the chain lines up."""
        resolved: dict[str, Any] = {}
        signatures: dict[str, ModelSignature] = {}
        code: dict[str, dict[str, str]] = {}
        for variant, vspec in spec.variants.items():
            for step in vspec.steps:
                key = f"{variant}.{step.name}"
                if step.model is not None:
                    row = self.resolve_model(s, workspace, step.model)
                    resolved[key] = {"model": f"{row.name}:{row.version}", "sha256": row.sha256}
                    signatures[key] = ModelSignature(row.inputs, row.outputs)
                elif step.code is not None:
                    row_c = self.resolve_code(s, workspace, step.code)
                    sources = self.code_sources(row_c.sha256, row_c.filename)
                    assert step.python is not None
                    if not code_packages.defines_class(sources, step.python):
                        raise InvalidInput(
                            f"step {key!r}: code {row_c.name}:{row_c.version} has no top-level class for "
                            f"{step.python!r} (it provides modules {row_c.modules})"
                        )
                    resolved[key] = {
                        "code": f"{row_c.name}:{row_c.version}",
                        "sha256": row_c.sha256,
                        "filename": row_c.filename,
                    }
                    code[key] = sources
        validate_pipeline(spec, signatures, uploaded_steps=set(code))
        _check_validations(spec, signatures)
        return resolved

    def swap_model(
        self, who: Principal, workspace: str, name: str, pv: PipelineVersion, variant: str, step: str, ref: str
    ) -> PipelineVersion:
        """A new version of `pv` whose step `variant.step` runs model `ref`, if `ref` is a drop-in
        replacement (same inputs, at least the same outputs); nothing is stored otherwise."""
        self.check_workspace(who, workspace, Role.editor)
        spec = parse_spec(pv.spec)
        if variant not in spec.variants:
            raise NotFound(
                f"pipeline {name!r} version {pv.version} has no variant {variant!r}: it has {sorted(spec.variants)}"
            )
        steps = {s.name: s for s in spec.variants[variant].steps}
        if step not in steps:
            raise NotFound(f"variant {variant!r} has no step {step!r}: it has {sorted(steps)}")
        if steps[step].model is None:
            raise InvalidInput(f"step {variant}.{step} is a Python step, not a model step: only models swap")
        key = f"{variant}.{step}"
        with self.db.session() as s:
            new = self.resolve_model(s, workspace, ref)
            old = s.scalars(select(ModelVersion).where(ModelVersion.sha256 == pv.resolved[key]["sha256"])).first()
            if old is not None:
                _check_drop_in(old, new)
        data = copy.deepcopy(pv.spec)
        for step_spec in data["variants"][variant]["steps"]:
            if step_spec["name"] == step:
                step_spec["model"] = f"{new.name}:{new.version}"
        version, _ = self.put_pipeline(who, workspace, name, data)
        return self.version_row(workspace, name, version)

    def get_pipeline_version(
        self, who: Principal, workspace: str, name: str, version: int | None = None
    ) -> PipelineVersion:
        self.check_workspace(who, workspace, Role.viewer)
        with self.db.session() as s:
            row = _latest(s, PipelineVersion, workspace, name, version)
            if row is None:
                what = f"pipeline {name!r}" + (f" version {version}" if version else "")
                raise NotFound(f"{what} not found in workspace {workspace!r}: list them with `corral pipelines list`")
            return row

    def version_row(self, workspace: str, name: str, version: int | None) -> PipelineVersion:
        with self.db.session() as s:
            row = _latest(s, PipelineVersion, workspace, name, version)
        if row is None:
            raise NotFound(f"pipeline {name!r} version {version} not found in workspace {workspace!r}")
        return row

    def model_signatures(self, resolved: dict[str, Any]) -> dict[str, ModelSignature]:
        """Signatures of the models a resolved pipeline version pins, by "variant.step"."""
        out = {}
        with self.db.session() as s:
            for key, pinned in resolved.items():
                if "model" in pinned:
                    row = s.scalars(select(ModelVersion).where(ModelVersion.sha256 == pinned["sha256"])).first()
                    if row is not None:
                        out[key] = ModelSignature(row.inputs, row.outputs)
        return out

    def pipeline_state(self, workspace: str, name: str) -> Pipeline | None:
        with self.db.session() as s:
            return s.get(Pipeline, (workspace, name))

    def list_pipelines(self, who: Principal, workspace: str) -> list[dict[str, Any]]:
        self.check_workspace(who, workspace, Role.viewer)
        with self.db.session() as s:
            latest = dict(
                s.execute(
                    select(PipelineVersion.name, func.max(PipelineVersion.version))
                    .where(PipelineVersion.workspace == workspace)
                    .group_by(PipelineVersion.name)
                ).all()
            )
            states = {p.name: p for p in s.scalars(select(Pipeline).where(Pipeline.workspace == workspace))}
        return [
            {
                "name": name,
                "version": version,
                "deployed": bool(states[name].deployed) if name in states else False,
                "deployed_version": states[name].deployed_version if name in states else None,
            }
            for name, version in sorted(latest.items())
        ]

    def pipeline_versions(self, who: Principal, workspace: str, name: str) -> list[dict[str, Any]]:
        self.check_workspace(who, workspace, Role.viewer)
        with self.db.session() as s:
            rows = _versions(s, PipelineVersion, workspace, name)[::-1]
        if not rows:
            raise NotFound(f"pipeline {name!r} not found in workspace {workspace!r}")
        return [{"version": r.version, "created_at": r.created_at.isoformat(), "spec": r.spec} for r in rows]

    def mark_deployed(self, workspace: str, name: str, version: int, traffic: TrafficSpec) -> None:
        with self.db.session() as s:
            row = s.get(Pipeline, (workspace, name))
            if row is None:
                row = Pipeline(workspace=workspace, name=name)
                s.add(row)
            row.deployed = True
            row.deployed_version = version
            row.traffic = traffic.model_dump(mode="json")

    def mark_undeployed(self, workspace: str, name: str) -> None:
        with self.db.session() as s:
            row = s.get(Pipeline, (workspace, name))
            if row is not None:
                row.deployed = False

    def deployed_pipelines(self) -> list[Pipeline]:
        with self.db.session() as s:
            return list(s.scalars(select(Pipeline).where(Pipeline.deployed.is_(True))))

    def verify_access(self, token_hash: str | None, workspace: str, pipeline: str) -> Role:
        """For routers: the caller's role on a workspace's pipeline, or the same errors as the API."""
        who = self.principal_for_hash(token_hash)
        who.require(workspace, Role.viewer)
        return who.role


V = TypeVar("V", ModelVersion, CodeVersion, DatasetVersion, PipelineVersion)


def _versions(s: Session, table: type[V], workspace: str, name: str, version: int | None = None) -> list[V]:
    """All versions of a name, newest first (or just `version`)."""
    query = select(table).where(table.workspace == workspace, table.name == name)
    if version is not None:
        query = query.where(table.version == version)
    return list(s.scalars(query.order_by(table.version.desc())))


def _latest_each(s: Session, table: type[V], workspace: str) -> list[V]:
    """The newest version of every name in a workspace, by name (sorted here, whatever the collation)."""
    rows = s.scalars(select(table).where(table.workspace == workspace).order_by(table.version))
    latest = {row.name: row for row in rows}
    return [latest[name] for name in sorted(latest)]


def _latest(s: Session, table: type[V], workspace: str, name: str, version: int | None = None) -> V | None:
    """The newest version of a name (or exactly `version`), None when there is none."""
    rows = _versions(s, table, workspace, name, version)
    return rows[0] if rows else None


def _check_drop_in(old: ModelVersion, new: ModelVersion) -> None:
    """`new` can replace `old` in a running chain: the same inputs, and every output `old` had."""
    new_in = {i["name"]: i for i in new.inputs}
    if len(new.inputs) != len(old.inputs) or not all(_fits(i, new_in.get(i["name"])) for i in old.inputs):
        raise InvalidInput(
            f"model {new.name}:{new.version} cannot replace {old.name}:{old.version}: its inputs "
            f"{_signature(new.inputs)} differ from {_signature(old.inputs)}. Swap in a model with the same "
            "inputs, or apply a new pipeline version with steps that feed it"
        )
    new_out = {o["name"]: o for o in new.outputs}
    missing = [o for o in old.outputs if not _fits(o, new_out.get(o["name"]))]
    if missing:
        raise InvalidInput(
            f"model {new.name}:{new.version} cannot replace {old.name}:{old.version}: it lacks outputs "
            f"{_signature(missing)} that the next steps read (it has {_signature(new.outputs)})"
        )


def _fits(old: dict[str, Any], new: dict[str, Any] | None) -> bool:
    """Same name and datatype, same rank, and each dimension equal or dynamic (-1) on either side."""
    if new is None or new["datatype"] != old["datatype"] or len(new["shape"]) != len(old["shape"]):
        return False
    return all(a == b or -1 in (a, b) for a, b in zip(old["shape"], new["shape"], strict=True))


def _signature(items: list[Any]) -> str:
    return ", ".join(f"{i['name']}: {i['datatype']}{i['shape']}" for i in items)


def _model_dict(row: ModelVersion) -> dict[str, Any]:
    return {
        "name": row.name,
        "version": row.version,
        "sha256": row.sha256,
        "inputs": row.inputs,
        "outputs": row.outputs,
        "created_at": row.created_at.isoformat() if row.created_at else None,
    }


def _dataset_dict(row: DatasetVersion, *, created_at: bool = False) -> dict[str, Any]:
    info: dict[str, Any] = {
        "name": row.name,
        "version": row.version,
        "rows": row.rows,
        "columns": row.columns,
        "sha256": row.sha256,
    }
    if created_at:
        info["created_at"] = row.created_at.isoformat() if row.created_at else None
    return info


def _check_validations(spec: PipelineSpec, signatures: dict[str, ModelSignature]) -> None:
    """Validations must parse and name only columns the pipeline is known to take or return."""
    from cluster.metadata import log_columns, pipeline_metadata

    rules = parse_rules(spec.validations)
    if not rules:
        return
    metadata = pipeline_metadata("", 0, spec, signatures)
    known = log_columns(metadata)
    # Columns a step of uploaded code makes cannot be known before it runs: check only what can be.
    checkable = [r for r in rules if all(_side_known(c, metadata) for c in r.columns)]
    check_columns(checkable, known)


def _side_known(column: str, metadata: dict[str, Any]) -> bool:
    return bool(metadata["inputs"] if column.startswith("in.") else metadata["outputs"])


def _aware(moment: datetime) -> datetime:
    """SQLite gives datetimes back without their zone; they were stored in UTC."""
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else _aware(moment).isoformat().replace("+00:00", "Z")
